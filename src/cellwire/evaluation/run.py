"""``evaluate``: run workflows over the same rows (a batch each) and score every output."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cellwire.model import Workflow
from cellwire.runner import DEFAULT, StoreOption, blocking, default_runner
from cellwire.scale.batch import RESULT_COLUMNS, amap, input_rows, store_of
from cellwire.store.batches import save_evaluation

from .result import Evaluation, summarize
from .scorers import ROUTER, Score, Scorer, scorer_of

if TYPE_CHECKING:
    import pandas as pd

    from cellwire.engine import Runtime

#: Scores computed at once per scorer (judge and embedding calls in flight).
SCORE_CONCURRENCY = 8


@dataclass
class Variant:
    """One contender: a workflow and the options of its batch (``model``, say)."""

    workflow: Workflow
    name: str | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def variants_of(workflows: Any) -> list[Variant]:
    """The contenders, uniquely named: a Workflow, a list of Workflows/Variants, or a mapping
    of names to them (a ``(workflow, model)`` pair is a Variant with that model)."""
    if isinstance(workflows, (Workflow, Variant)):
        items: list[tuple[str | None, Any]] = [(None, workflows)]
    elif isinstance(workflows, Mapping):
        items = [(str(k), v) for k, v in workflows.items()]
    elif isinstance(workflows, Sequence) and not isinstance(workflows, str):
        items = [(None, v) for v in workflows]
    else:
        raise TypeError(f"workflows is a {type(workflows).__name__}; pass a Workflow, a list "
                        "of them, or a dict of names to workflows")
    if not items:
        raise ValueError("evaluate() needs at least one workflow")
    found = []
    for name, item in items:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Workflow):
            item = Variant(item[0], model=str(item[1]))
        if isinstance(item, Workflow):
            item = Variant(item)
        if not isinstance(item, Variant):
            raise TypeError(f"{item!r} is no workflow; pass Workflows, (workflow, model) "
                            "pairs or Variants")
        found.append(Variant(item.workflow, name or item.name, item.model, dict(item.options)))
    base = [v.name or v.workflow.name + (f"[{v.model}]" if v.model else "") for v in found]
    for i, v in enumerate(found):
        v.name = base[i] if base.count(base[i]) == 1 else f"{base[i]}#{base[:i + 1].count(base[i])}"
    return found


def output_column(out: pd.DataFrame, inputs: Sequence[str], output: str | None,
                  name: str) -> str:
    """The result column holding the output to score."""
    outputs = [c for c in map(str, out.columns) if c not in inputs and c not in RESULT_COLUMNS]
    if output is not None:
        for column in (output, f"output.{output}"):
            if column in outputs:
                return column
        raise KeyError(f"workflow {name!r} has no output {output!r} (its outputs: "
                       f"{', '.join(outputs) or 'none'}); pass output= one of them")
    if not outputs:
        raise KeyError(f"workflow {name!r} has no outputs to score; give it an end node "
                       "(or an answer node)")
    return outputs[0]


async def aevaluate(workflows: Any, data: Any, *, scorers: Sequence[Any],
                    expected: str = "expected", output: str | None = None,
                    model: str | None = None, concurrency: int = 8,
                    store: StoreOption = DEFAULT, runtime: Runtime | None = None,
                    name: str | None = None, progress: Any = True,
                    columns: Mapping[str, str] | None = None,
                    **map_options: Any) -> Evaluation:
    """Run each of ``workflows`` over the rows of ``data`` and score their outputs against
    the ``expected`` column with every one of ``scorers``.

    ``workflows``: a Workflow, a list of them (two versions of one), a dict of names to
    workflows, or ``(workflow, model)`` pairs / :class:`Variant` (one workflow, two models).
    ``scorers``: names (``"exact"``, ``"numeric:0.01"``, ...), Python functions
    ``f(output, expected[, row])`` or :class:`Scorer` objects (:mod:`.scorers`, :func:`.judge`).
    ``output``: the output scored (default: each workflow's first). ``model``, ``store``,
    ``runtime``, ``concurrency``, ``columns`` and other keywords go to each batch
    (:func:`cellwire.scale.amap`). The evaluation is stored (``store``) to compare later.
    """
    import pandas as pd

    chosen: list[Scorer] = [scorer_of(s) for s in scorers]
    if not chosen:
        raise ValueError("evaluate() needs at least one scorer, e.g. scorers=['exact']")
    names = [s.name for s in chosen]
    if len(set(names)) != len(names):
        twice = min(n for n in names if names.count(n) > 1)
        raise ValueError(f"two scorers are named {twice!r}; name them apart "
                         "(function(f, name=...), judge(..., name=...))")
    contenders = variants_of(workflows)
    frame, _ = input_rows(data)
    if expected not in frame.columns:
        raise KeyError(f"no expected column {expected!r} in the data (columns: "
                       f"{', '.join(map(str, frame.columns))}); pass expected= the column "
                       "holding the right answers")
    inputs = frame.drop(columns=[expected])
    input_names = [str(c) for c in inputs.columns]
    table = inputs.copy()
    table["expected"] = frame[expected].to_numpy()
    records: list[Mapping[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in frame[input_names].to_dict("records")]
    long: list[dict[str, Any]] = []
    llm = (runtime.llm if runtime is not None and runtime.llm is not None
           else default_runner().runtime(store=False).llm)
    token = ROUTER.set(llm)
    try:
        for variant in contenders:
            wf_name = variant.name or variant.workflow.name
            # The expected column is not among the inputs: no run sees the answers.
            out = await amap(variant.workflow, inputs, model=variant.model or model,
                             concurrency=concurrency, store=store, runtime=runtime,
                             progress=progress, columns=columns,
                             **{**map_options, **variant.options})
            outputs = out[output_column(out, input_names, output, wf_name)].tolist()
            table[f"{wf_name}:output"] = pd.Series(outputs, index=table.index, dtype=object)
            for fact in ("status", "run_id", "latency", "total_tokens", "cost"):
                table[f"{wf_name}:{fact}"] = out[fact].to_numpy()
            ran = [s not in ("failed", "stopped", "pending") for s in out["status"]]
            judge_tokens, judge_cost = [0] * len(table), [0.0] * len(table)
            for scorer in chosen:
                values = await score_rows(scorer, outputs, frame[expected].tolist(), records,
                                          ran)
                table[f"{wf_name}:{scorer.name}"] = [s.value for s in values]
                for i, (index, s) in enumerate(zip(table.index, values, strict=True)):
                    judge_tokens[i] += s.tokens
                    judge_cost[i] += s.cost  # NaN for a judge without a known price
                    long.append({"row": index, "workflow": wf_name, "scorer": scorer.name,
                                 "score": s.value, "passed": scorer.passed(s.value),
                                 "reason": s.reason})
            table[f"{wf_name}:judge_tokens"] = judge_tokens
            table[f"{wf_name}:judge_cost"] = judge_cost
    finally:
        ROUTER.reset(token)
    scores = pd.DataFrame.from_records(
        long, columns=["row", "workflow", "scorer", "score", "passed", "reason"])
    workflow_names = [v.name or v.workflow.name for v in contenders]
    result = Evaluation(uuid.uuid4().hex[:16], workflow_names, names, table, scores,
                        summarize(table, scores, workflow_names, names), name, time.time(),
                        expected)
    found_store = store_of(store)
    if found_store is not None:
        await asyncio.to_thread(save_evaluation, found_store, result.stored())
        result.store_path = str(found_store.path)
    return result


async def score_rows(scorer: Scorer, outputs: Sequence[Any], expected: Sequence[Any],
                     rows: Sequence[Mapping[str, Any]], ran: Sequence[bool]) -> list[Score]:
    """``scorer``'s score of each output; a row whose run did not end well scores 0 (it
    reaches no judge)."""
    items = [item for item, ok in zip(zip(outputs, expected, rows, strict=True), ran,
                                      strict=True) if ok]
    scored = iter(await scorer.score_all(items, SCORE_CONCURRENCY))
    return [next(scored) if ok else Score(0.0, "the run failed") for ok in ran]


def evaluate(workflows: Any, data: Any, **kwargs: Any) -> Evaluation:
    """Blocking :func:`aevaluate` (also inside a notebook)."""
    return blocking(aevaluate(workflows, data, **kwargs))


__all__ = ["Variant", "aevaluate", "evaluate", "output_column", "variants_of"]
