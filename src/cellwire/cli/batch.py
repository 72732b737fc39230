"""``cellwire map``: a workflow over every row of a table file, resumable after a crash.

Exit codes: 0 every row ran (succeeded, or partially with handled errors), 1 some rows
failed, 2 the file, the table or the command line is not valid, 130 interrupted (resume with
``--resume ID``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cellwire.cli.app import cli
from cellwire.cli.common import EXIT_FAILED, EXIT_OK, fail, load_workflow
from cellwire.model import WorkflowError

if TYPE_CHECKING:
    import pandas as pd

#: The table formats ``--input`` and ``--output`` take, by suffix.
TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")


def read_table(path: Path, option: str = "--input") -> pd.DataFrame:
    """A CSV, Parquet or JSON-lines file as a DataFrame, or exit 2 saying what is wrong."""
    import pandas as pd

    suffix = _suffix(path, option)
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_parquet(path)
    except ImportError as exc:
        fail([(f"{option} {path}: reading Parquet needs pyarrow ({exc}); pip install "
               "pyarrow, or use a .csv or .jsonl file")])
    except OSError as exc:
        fail([f"{option} {path}: cannot read the file: {exc.strerror or exc}"])
    except ValueError as exc:
        fail([f"{option} {path}: not a valid {suffix[1:]} table: {exc}"])


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` (by its suffix) through a temporary file, so a crash leaves no half."""
    suffix = _suffix(path, "--output")
    out = frame.reset_index(drop=True)
    if suffix != ".jsonl":
        # Lists and dicts as JSON text: CSV has no such cells, and Parquet wants one type.
        for column in out.columns:
            if out[column].map(lambda v: isinstance(v, (list, dict))).any():
                out[column] = out[column].map(
                    lambda v: json.dumps(v, ensure_ascii=False, default=str)
                    if isinstance(v, (list, dict)) else v)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if suffix == ".csv":
            out.to_csv(partial, index=False)
        elif suffix == ".jsonl":
            out.to_json(partial, orient="records", lines=True, force_ascii=False,
                        default_handler=str)
        else:
            out.to_parquet(partial, index=False)
        os.replace(partial, path)
    except ImportError as exc:
        fail([(f"--output {path}: writing Parquet needs pyarrow ({exc}); pip install "
               "pyarrow, or use a .csv or .jsonl file")])
    except OSError as exc:
        fail([f"--output {path}: cannot write the file: {exc.strerror or exc}"])


def _suffix(path: Path, option: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise click.BadParameter(f"{path} is not a {', '.join(TABLE_SUFFIXES)} file",
                                 param_hint=option)
    return suffix


def parse_mapping(pairs: Sequence[str]) -> dict[str, str]:
    """``COLUMN=INPUT`` pairs as a ``{column: input}`` mapping."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, name = pair.partition("=")
        if not sep or not column or not name:
            raise click.BadParameter(f"{pair!r} is not COLUMN=INPUT", param_hint="--column")
        mapping[column] = name
    return mapping


@contextmanager
def dask_client(address: str | None) -> Iterator[Any]:
    """A Dask client of the scheduler at ``address`` (None: no client)."""
    if address is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        fail(["--scheduler needs Dask: pip install 'cellwire[dask]'"])
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        fail([f"--scheduler {address}: cannot reach the Dask scheduler: {exc}"])
    try:
        yield client
    finally:
        client.close()


@contextmanager
def reported_warnings() -> Iterator[None]:
    """Warnings (unknown columns, say) printed once on stderr as ``warning: ...``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            yield
        finally:
            for message in dict.fromkeys(as_options(str(w.message)) for w in caught):
                click.echo(f"warning: {message}", err=True)


def as_options(message: str) -> str:
    """A message about Python keywords, in the command line's terms."""
    return message.replace("columns={'column': 'input'}", "--column COLUMN=INPUT") \
        .replace("columns= maps", "--column maps")


def check_model(model: str | None) -> None:
    if model is not None and "/" not in model.strip("/"):
        raise click.BadParameter(f"{model!r} is not PROVIDER/MODEL, e.g. openai/gpt-4o",
                                 param_hint="--model")


@cli.command("map")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "-i", "input_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The rows: a .csv, .parquet or .jsonl file; a column per start input.")
@click.option("--output", "-o", "output_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where the result goes (.csv, .parquet or .jsonl): the input columns, a "
                   "column per output, status, error, run_id, latency, total_tokens, cost.")
@click.option("--concurrency", "-n", type=click.IntRange(min=1), default=8, show_default=True,
              help="Rows in flight at once.")
@click.option("--model", "-m", metavar="PROVIDER/MODEL",
              help="Route every LLM node of every row to this model.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run the rows on this Dask scheduler (tcp://host:8786).")
@click.option("--resume", "resume_id", metavar="ID",
              help="Resume batch ID (the same FILE and --input): rows whose runs ended are "
                   "not run again.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store file (default: $CELLWIRE_HOME/runs.db).")
@click.option("--column", "-c", "mappings", multiple=True, metavar="COLUMN=INPUT",
              help="Fill start input INPUT from column COLUMN (beats a column named INPUT). "
                   "Repeatable.")
@click.option("--trust", "trust_file", is_flag=True,
              help="Trust FILE for this batch: its code runs in this process, not the sandbox.")
def map_command(file: Path, input_path: Path, output_path: Path, concurrency: int,
                model: str | None, scheduler: str | None, resume_id: str | None, as_json: bool,
                db: Path | None, mappings: Sequence[str], trust_file: bool) -> None:
    """Run the workflow in FILE once per row of --input and write the rows' results to
    --output, with a progress bar and a summary at the end.

    The batch has an id in the run store (printed first); after a crash or Ctrl-C, the
    same command with --resume ID runs only the rows whose runs had not ended.
    """
    from cellwire.runner import resolve_store
    from cellwire.scale import map as map_rows
    from cellwire.scale.batch import new_batch_id
    from cellwire.store.batches import BatchMismatch, find_batch

    check_model(model)
    _suffix(output_path, "--output")
    workflow = load_workflow(file, trusted=True if trust_file else None)
    frame = read_table(input_path)
    columns = parse_mapping(mappings)
    try:
        store = resolve_store(db if db is not None else True)
    except ValueError as exc:
        fail([f"error: {exc}"])
    if store is None:
        fail(["error: the run store cannot be opened; pass --db PATH"])
    if resume_id is not None and find_batch(store, resume_id) is None:
        fail([f"--resume {resume_id}: the store {store.path} has no batch by that id"])
    batch_id = resume_id or new_batch_id()
    click.echo(f"batch {batch_id} ({'resumed, ' if resume_id else ''}{len(frame)} rows); "
               f"resume with --resume {batch_id}", err=True)
    started = time.monotonic()
    try:
        with reported_warnings(), dask_client(scheduler) as client:
            out = map_rows(workflow, frame, model=model, concurrency=concurrency, store=store,
                           client=client, columns=columns or None, batch_id=batch_id,
                           progress=True)
    except WorkflowError as exc:
        fail(f"{file}: {problem}" for problem in exc.problems)
    except BatchMismatch as exc:
        fail([f"--resume {resume_id}: {exc}"])
    except (TypeError, ValueError) as exc:
        fail([f"error: {as_options(str(exc))}"])
    except KeyboardInterrupt:
        fail([f"interrupted; resume with --resume {batch_id}"], 130)
    write_table(out, output_path)
    summary = summarize(out, batch_id, output_path, time.monotonic() - started)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, allow_nan=False))
    else:
        cost = summary["cost"]
        click.echo(f"batch {batch_id}: {summary['rows']} rows, {summary['succeeded']} "
                   f"succeeded, {summary['failed']} failed, {summary['total_tokens']} tokens, "
                   f"{'cost unknown' if cost is None else f'${cost:.4f}'}, "
                   f"{summary['elapsed_s']:.1f} s -> {output_path}", err=True)
        for index, error in out.loc[out["status"].isin(["failed", "stopped"]), "error"].items():
            click.echo(f"row {index}: {error}", err=True)
    sys.exit(EXIT_FAILED if summary["failed"] else EXIT_OK)


def summarize(out: pd.DataFrame, batch_id: str, output: Path, elapsed: float) -> dict[str, Any]:
    """The summary of a finished batch, as ``--json`` prints it."""
    status = out["status"]
    cost = float(out["cost"].sum(min_count=1)) if len(out) else 0.0
    unpriced = bool(out["cost"].isna().any())
    return {
        "batch_id": batch_id,
        "rows": len(out),
        "succeeded": int(status.isin(["succeeded", "partial-succeeded"]).sum()),
        "failed": int(status.isin(["failed", "stopped"]).sum()),
        "other": int((~status.isin(["succeeded", "partial-succeeded", "failed",
                                    "stopped"])).sum()),
        "total_tokens": int(out["total_tokens"].sum()),
        "cost": None if unpriced or math.isnan(cost) else cost,
        "elapsed_s": round(elapsed, 3),
        "output": str(output),
    }
