"""``cellwire eval``: score workflows over a dataset, and gate a change in CI.

Exit codes: 0 every workflow's mean score on every scorer is at least ``--min-score`` (or no
``--min-score`` was given); 1 some mean score is below it (the summary names which); 2 a
file, the data or the command line is not valid.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cellwire.cli.app import cli
from cellwire.cli.batch import (
    as_options,
    check_model,
    dask_client,
    parse_mapping,
    read_table,
    reported_warnings,
    write_table,
)
from cellwire.cli.common import EXIT_FAILED, EXIT_OK, fail, load_workflow
from cellwire.model import WorkflowError

#: Exit code of ``cellwire eval`` when a mean score is below ``--min-score``.
EXIT_BELOW = EXIT_FAILED


@cli.command("eval")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "-d", "data_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The rows: a .csv, .parquet or .jsonl file with the inputs and the "
                   "expected column.")
@click.option("--scorer", "-s", "scorers", multiple=True, required=True, metavar="NAME[:ARG]",
              help="exact, contains, regex[:PATTERN], json[:FIELD.PATH], numeric[:TOLERANCE], "
                   "similarity[:THRESHOLD], embedding[:PROVIDER/MODEL], judge[:PROVIDER/MODEL]. "
                   "Repeatable.")
@click.option("--expected", "-e", required=True, metavar="COLUMN",
              help="The column holding the expected outputs.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None, metavar="SCORE",
              help="Exit 1 when a workflow's mean score on a scorer is below SCORE.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the per-row results (.csv, .parquet or .jsonl).")
@click.option("--output-name", "output_name", metavar="OUTPUT",
              help="The workflow output scored (default: each workflow's first).")
@click.option("--model", "-m", metavar="PROVIDER/MODEL",
              help="Route every LLM node of every workflow to this model.")
@click.option("--judge-model", metavar="PROVIDER/MODEL", help="The model of the judge scorer.")
@click.option("--rubric", metavar="TEXT", help="The judge's rubric.")
@click.option("--embedding-model", metavar="PROVIDER/MODEL",
              help="The model of the embedding scorer.")
@click.option("--concurrency", "-n", type=click.IntRange(min=1), default=8, show_default=True,
              help="Rows in flight at once.")
@click.option("--scheduler", metavar="ADDRESS", help="Run the rows on this Dask scheduler.")
@click.option("--column", "-c", "mappings", multiple=True, metavar="COLUMN=INPUT",
              help="Fill start input INPUT from column COLUMN. Repeatable.")
@click.option("--name", metavar="NAME", help="A name for the stored evaluation.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store file (default: $CELLWIRE_HOME/runs.db).")
@click.option("--trust", "trust_files", is_flag=True,
              help="Trust FILES for this evaluation: their code runs in this process.")
def eval_command(files: Sequence[Path], data_path: Path, scorers: Sequence[str], expected: str,
                 min_score: float | None, as_json: bool, output_path: Path | None,
                 output_name: str | None, model: str | None, judge_model: str | None,
                 rubric: str | None, embedding_model: str | None, concurrency: int,
                 scheduler: str | None, mappings: Sequence[str], name: str | None,
                 db: Path | None, trust_files: bool) -> None:
    """Run each workflow FILE over the rows of --data, score its outputs against the
    --expected column, print the summary (mean with a 95% bootstrap CI, pass rate, cost,
    p50/p95 latency), and exit 1 when a mean score is below --min-score.

    Workflows are named by their file names; the evaluation is stored (its id is printed)
    so a later one can be compared with it.
    """
    from cellwire.evaluation import evaluate
    from cellwire.evaluation.scorers import scorer_of
    from cellwire.runner import resolve_store

    check_model(model)
    variants: dict[str, Any] = {}
    for file in files:
        key = file.stem if sum(f.stem == file.stem for f in files) == 1 else str(file)
        variants[key] = load_workflow(file, trusted=True if trust_files else None)
    frame = read_table(data_path, "--data")
    if expected not in frame.columns:
        fail([(f"--expected {expected}: {data_path} has no such column (columns: "
               f"{', '.join(map(str, frame.columns))})")])
    try:
        chosen = [scorer_of(spec, rubric=rubric, judge_model=judge_model,
                            embedding_model=embedding_model) for spec in scorers]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scorer") from None
    try:
        store = resolve_store(db if db is not None else True)
    except ValueError as exc:
        fail([f"error: {exc}"])
    try:
        with reported_warnings(), dask_client(scheduler) as client:
            result = evaluate(variants, frame, scorers=chosen, expected=expected,
                              output=output_name, model=model, concurrency=concurrency,
                              store=store if store is not None else False, name=name,
                              client=client, columns=parse_mapping(mappings) or None,
                              progress=True)
    except WorkflowError as exc:
        fail(f"{problem}" for problem in exc.problems)
    except (KeyError, TypeError, ValueError) as exc:
        fail([f"error: {as_options(str(exc.args[0] if isinstance(exc, KeyError) else exc))}"])
    except KeyboardInterrupt:
        fail(["interrupted"], 130)
    if output_path is not None:
        write_table(result.rows, output_path)
    below = result.below(min_score) if min_score is not None else result.summary.iloc[0:0]
    if as_json:
        click.echo(json.dumps({
            "eval_id": result.eval_id, "rows": len(result.rows),
            "workflows": result.workflows, "scorers": result.scorers,
            "min_score": min_score, "passed": below.empty,
            "summary": _records(result.summary), "below": _records(below),
        }, ensure_ascii=False, allow_nan=False))
    else:
        shown = result.summary[["workflow", "scorer", "mean", "ci_low", "ci_high",
                                "pass_rate", "failed_runs", "total_cost", "judge_cost",
                                "p50_latency", "p95_latency"]]
        click.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        click.echo(f"evaluation {result.eval_id}: {len(result.rows)} rows", err=True)
        for row in below.itertuples():
            click.echo(f"below {min_score}: {row.workflow} on {row.scorer}: mean "
                       f"{row.mean:.3f} (95% CI {row.ci_low:.3f}-{row.ci_high:.3f})", err=True)
    sys.exit(EXIT_OK if below.empty else EXIT_BELOW)


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else
                 v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in frame.to_dict("records")]
