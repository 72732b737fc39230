"""Batch runs: one run of a workflow per row of a DataFrame, a bounded number at a time.

Rows run as asyncio tasks on one event loop and share one runtime, so the LLM rate limits,
the connection pools and the run store serve the whole batch. The workflow is compiled once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cellwire.engine import CompiledWorkflow, Execution, RunResult, RunStatus, Runtime
from cellwire.engine import compile_workflow as _compile
from cellwire.model import Problem, Workflow, WorkflowError
from cellwire.model.validate import missing_inputs
from cellwire.runner import DEFAULT, RUN_OPTIONS, StoreOption, blocking, default_runner

if TYPE_CHECKING:
    import pandas as pd

OnError = Literal["keep", "raise"]
#: ``progress(done, total)``, called after each row ends.
Progress = Callable[[int, int], None]

#: The columns every result has after the inputs and the outputs.
RESULT_COLUMNS = ("status", "error", "run_id", "latency", "total_tokens", "cost")
#: Run options that name one run, so a batch cannot take them.
_PER_RUN = ("run_id", "start_at", "previous")
#: Statuses that count as a failed row (a paused run waits for input; it has not failed).
_FAILED = (RunStatus.FAILED, RunStatus.STOPPED)
#: The status of a row that never ran (``on_error="raise"`` stopped the batch first).
NOT_RUN = "pending"


class MapError(RuntimeError):
    """A row failed and ``on_error="raise"``. ``frame`` holds every row that had ended
    (the rest are ``pending``), so nothing already done is lost."""

    def __init__(self, message: str, *, index: Any, node_id: str | None, frame: pd.DataFrame):
        super().__init__(message)
        self.index = index
        self.node_id = node_id
        self.frame = frame


@dataclass(slots=True)
class RowResult:
    """What a batch keeps of one run: small and picklable (a Dask worker sends it back)."""

    status: str
    error: str | None = None
    error_node: str | None = None
    run_id: str | None = None
    latency: float = 0.0
    total_tokens: int = 0
    cost: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    answer: str = ""

    @classmethod
    def of(cls, result: RunResult) -> RowResult:
        return cls(str(result.status), result.error, result.error_node, result.run_id,
                   result.elapsed_ms / 1000, result.total_tokens, result.total_cost,
                   dict(result.outputs), result.answer)

    @property
    def failed(self) -> bool:
        return self.status in _FAILED


# -- inputs ---------------------------------------------------------------------------------


def input_rows(inputs: Any) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The input frame (its index and columns start the result) and each row's inputs."""
    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        names = list(inputs.columns)
        bad = [c for c in names if not isinstance(c, str)]
        if bad:
            raise TypeError(f"input column {bad[0]!r} is not a string; columns name inputs "
                            "(rename them, e.g. df.columns = df.columns.astype(str))")
        if len(set(names)) != len(names):
            twice = sorted({c for c in names if names.count(c) > 1})
            raise ValueError(f"input column {twice[0]!r} appears twice; drop or rename one")
        # A missing cell (NaN, None, NA) is a missing input, so defaults and checks apply.
        rows = [{k: _plain(v) for k, v in zip(names, values, strict=True) if not _missing(v)}
                for values in inputs.itertuples(index=False, name=None)]
        return inputs, rows
    if isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
        rows = []
        for position, row in enumerate(inputs):
            if not isinstance(row, Mapping):
                raise TypeError(f"inputs[{position}] is a {type(row).__name__}, not a dict; "
                                "pass a DataFrame or a list of dicts")
            rows.append(dict(row))
        return pd.DataFrame(rows), rows
    raise TypeError(f"inputs is a {type(inputs).__name__}; pass a DataFrame (a run per row) "
                    "or a list of dicts")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    import pandas as pd

    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, as nodes and the store expect."""
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def check_columns(workflow: Workflow, columns: Iterable[str]) -> None:
    """Fail before any run when a required input is neither a column nor a keyword."""
    problems = [_as_column(p) for p in missing_inputs(workflow, dict.fromkeys(columns))]
    if problems:
        raise WorkflowError(problems, f"the batch over {workflow.name!r} cannot start")


def _as_column(problem: Problem) -> Problem:
    # The run's hint says how to pass one input; a batch takes it as a column.
    name = (problem.field or "").removeprefix("variables.")
    return dataclasses.replace(problem, hint=f"add a column {name!r} to the inputs, or pass "
                                             f"{name}=... for every row")


def split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(executor options, inputs shared by every row)`` from ``map``'s extra keywords."""
    for name in _PER_RUN:
        if name in kwargs:
            raise TypeError(f"map() got {name}=, which names a single run; every row gets "
                            "its own run id (the result's run_id column)")
    options = {k: kwargs.pop(k) for k in RUN_OPTIONS if k in kwargs}
    if "run_concurrency" in kwargs:
        # ``concurrency`` bounds the rows; a run's own node limit has this name here.
        options["concurrency"] = kwargs.pop("run_concurrency")
    return options, kwargs


# -- outputs --------------------------------------------------------------------------------


def output_names(compiled: CompiledWorkflow) -> list[str]:
    """The workflow's outputs as columns: the end nodes' variables, ``answer`` for a chatflow."""
    workflow = compiled.workflow
    names: list[str] = []
    for node in workflow.children(None):
        if node.type == "end":
            for out in compiled.configs[node.id].outputs:
                if out.variable not in names:
                    names.append(out.variable)
    if workflow.mode == "advanced-chat" or any(
            n.type == "answer" for n in workflow.children(None)):
        names.append("answer")
    return names


def result_frame(frame: pd.DataFrame, compiled: CompiledWorkflow,
                 results: Sequence[RowResult | None]) -> pd.DataFrame:
    """The input frame with a column per output and the run's facts, row by row."""
    import pandas as pd

    out = frame.copy()
    names = output_names(compiled)
    answer = "answer" in names and not any("answer" in r.outputs for r in results if r)
    for r in results:
        for key in r.outputs if r is not None else ():
            if key not in names:
                names.append(key)
    taken = {*(str(c) for c in frame.columns), *RESULT_COLUMNS}
    for name in names:
        # An output named like an input (or a result column) keeps both: ``output.name``.
        column = f"output.{name}" if name in taken else name
        if name == "answer" and answer:
            values = [r.answer if r is not None else None for r in results]
        else:
            values = [r.outputs.get(name) if r is not None else None for r in results]
        out[column] = _column(values, out.index)
    out["status"] = [r.status if r is not None else NOT_RUN for r in results]
    out["error"] = _column([r.error if r is not None else None for r in results], out.index)
    out["run_id"] = _column([r.run_id if r is not None else None for r in results], out.index)
    out["latency"] = pd.Series([r.latency if r is not None else math.nan for r in results],
                               index=out.index, dtype="float64")
    out["total_tokens"] = pd.Series([r.total_tokens if r is not None else 0 for r in results],
                                    index=out.index, dtype="int64")
    out["cost"] = pd.Series([r.cost if r is not None else math.nan for r in results],
                            index=out.index, dtype="float64")
    return out


def _column(values: list[Any], index: pd.Index) -> pd.Series:
    import pandas as pd

    # Lists and dicts stay whole values (object); everything else gets pandas' own dtype.
    whole = not values or any(isinstance(v, (list, tuple, dict)) for v in values)
    return pd.Series(values, index=index, dtype=object if whole else None)


# -- running --------------------------------------------------------------------------------


async def run_rows(compiled: CompiledWorkflow, rows: Sequence[Mapping[str, Any]],
                   runtime: Runtime, *, concurrency: int, options: Mapping[str, Any],
                   on_error: OnError = "keep",
                   progress: Progress | None = None) -> list[RowResult | None]:
    """Run ``compiled`` once per row, at most ``concurrency`` at once, results in row order.

    With ``on_error="raise"`` no row starts after one has failed; the rows in flight finish.
    Rows that never ran are ``None``.
    """
    results: list[RowResult | None] = [None] * len(rows)
    todo = iter(range(len(rows)))
    state = {"done": 0, "failed": False}

    async def worker() -> None:
        # One shared iterator: next() never awaits, so two workers never take the same row.
        for position in todo:
            if state["failed"]:
                return
            row = await _run_one(compiled, rows[position], runtime, options)
            results[position] = row
            state["done"] += 1
            if row.failed and on_error == "raise":
                state["failed"] = True
            if progress is not None:
                progress(state["done"], len(rows))

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(rows))):
            group.create_task(worker())
    return results


async def _run_one(compiled: CompiledWorkflow, inputs: Mapping[str, Any], runtime: Runtime,
                   options: Mapping[str, Any]) -> RowResult:
    execution = Execution(compiled, inputs, runtime, **options)
    try:
        return RowResult.of(await default_runner().launch(execution))
    except Exception as exc:  # noqa: BLE001 - one row's surprise must not end the others
        return RowResult(str(RunStatus.FAILED), f"{type(exc).__name__}: {exc}",
                         run_id=execution.run_id)


def first_failure(frame: pd.DataFrame, results: Sequence[RowResult | None]) -> MapError | None:
    for index, row in zip(frame.index, results, strict=True):
        if row is not None and row.failed:
            where = f" at node {row.error_node!r}" if row.error_node else ""
            return MapError(f"row {index!r} failed{where}: {row.error}", index=index,
                            node_id=row.error_node, frame=frame)
    return None


async def amap(workflow: Workflow, inputs: Any, *, model: str | None = None,
               concurrency: int = 8, store: StoreOption = DEFAULT, runtime: Runtime | None = None,
               cache: bool = False, on_error: OnError = "keep", progress: Progress | None = None,
               client: Any = None, chunk_size: int | None = None,
               **run_options: Any) -> pd.DataFrame:
    """Run ``workflow`` once per row of ``inputs`` (a DataFrame, or a list of dicts), at most
    ``concurrency`` rows at once; returns the inputs with a column per output and ``status``,
    ``error``, ``run_id``, ``latency`` (s), ``total_tokens``, ``cost``, on the same index.

    Columns are inputs by name (``sys.query`` sets a system variable); a missing cell is a
    missing input. ``model``, ``store``, ``runtime`` and ``cache`` mean what they mean for
    :func:`cellwire.api.arun`, for every row. A failed row keeps its error and the others go
    on (``on_error="keep"``); ``on_error="raise"`` starts no row after a failure, lets the
    rows in flight finish and raises :class:`MapError` (its ``frame`` has what ran).

    ``client`` (a ``dask.distributed.Client``) runs the rows on its cluster instead: chunks
    of ``chunk_size`` rows, one per worker thread at a time, each run by the worker with
    ``concurrency`` rows at once; ``runtime`` (if any) must then be picklable, and ``store``
    is opened by the workers.

    Other keywords: executor options for each run (``max_steps``, ``max_time``,
    ``run_concurrency`` for the nodes in flight within one run), or inputs shared by every row.
    """
    if on_error not in ("keep", "raise"):
        raise ValueError(f"on_error={on_error!r}: use 'keep' or 'raise'")
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: a batch needs at least 1 row at a time")
    options, shared = split_options(dict(run_options))
    frame, rows = input_rows(inputs)
    both = sorted(set(shared) & set(frame.columns))
    if both:
        raise ValueError(f"input {both[0]!r} is both a column and a keyword; drop one")
    if shared:
        rows = [{**shared, **row} for row in rows]
    compiled = _compile(workflow)
    check_columns(workflow, [*frame.columns, *shared])
    if client is not None:
        from .cluster import make_job, run_on_dask

        job = make_job(workflow, runtime=runtime, store=store, model=model, cache=cache,
                       concurrency=concurrency, options=options, on_error=on_error)
        results = await run_on_dask(client, job, rows, chunk_size=chunk_size,
                                    progress=progress)
    else:
        if chunk_size is not None:
            raise TypeError("chunk_size= applies to Dask batches only (with client=)")
        shared_runtime = default_runner().runtime(store=store, model=model, cache=cache,
                                                  base=runtime)
        results = await run_rows(compiled, rows, shared_runtime, concurrency=concurrency,
                                 options=options, on_error=on_error, progress=progress)
    out = result_frame(frame, compiled, results)
    if on_error == "raise":
        error = first_failure(out, results)
        if error is not None:
            raise error
    return out


def map(workflow: Workflow, inputs: Any, **kwargs: Any) -> pd.DataFrame:
    """Blocking :func:`amap`, on the runner's long-lived loop (also in a notebook)."""
    return blocking(amap(workflow, inputs, **kwargs))
