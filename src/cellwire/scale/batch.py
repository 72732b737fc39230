"""Batch runs: one run of a workflow per row of a DataFrame, a bounded number at a time.

Rows run as asyncio tasks on one event loop and share one runtime, so the LLM rate limits,
the connection pools and the run store serve the whole batch. The workflow is compiled once.

A batch on a store has an id there (``result.attrs["batch_id"]``): each row's run id is
recorded as it starts, so an interrupted batch resumes (``batch_id=``) with only the rows
whose runs did not end, and ``retry=`` / :func:`retry_failed` run only the failed rows again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import math
import time
import uuid
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cellwire.engine import CompiledWorkflow, Execution, RunResult, RunStatus, Runtime
from cellwire.engine import compile_workflow as _compile
from cellwire.model import Problem, Workflow, WorkflowError
from cellwire.model.validate import missing_inputs
from cellwire.runner import (
    DEFAULT,
    RUN_OPTIONS,
    StoreOption,
    blocking,
    default_runner,
    resolve_store,
)
from cellwire.store import RunStore
from cellwire.store.batches import (
    Batch,
    BatchMismatch,
    FinishedRow,
    begin_batch,
    find_batch,
    finished_rows,
    record_row,
)
from cellwire.store.codec import to_json

from .progress import ProgressOption, Tracker

if TYPE_CHECKING:
    import pandas as pd

OnError = Literal["keep", "raise"]
#: ``log(position, run_id)``: a batch row starts as that run (recorded in the store).
RowLog = Callable[[int, str], None]

#: The columns every result has after the inputs and the outputs.
RESULT_COLUMNS = ("status", "error", "run_id", "latency", "total_tokens", "cost")
#: Run options that name one run, so a batch cannot take them.
_PER_RUN = ("run_id", "start_at", "previous")
#: Statuses that count as a failed row (a paused run waits for input; it has not failed).
_FAILED = (RunStatus.FAILED, RunStatus.STOPPED)
#: The status of a row that never ran (``on_error="raise"`` stopped the batch first).
NOT_RUN = "pending"
#: Row statuses ``retry=`` runs again.
RETRIED = (*(str(s) for s in _FAILED), NOT_RUN)
#: Keys of a result's ``attrs``: its batch id, and the columns that were its inputs.
BATCH_ATTR, INPUTS_ATTR = "batch_id", "input_columns"


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

    @classmethod
    def stored(cls, row: FinishedRow) -> RowResult:
        """A finished batch row as the store holds it."""
        cost = math.nan if row.total_cost is None else row.total_cost
        return cls(row.status, row.error, row.error_node, row.run_id,
                   (row.elapsed_ms or 0.0) / 1000, row.total_tokens, cost, dict(row.outputs),
                   row.answer)

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


def declared_inputs(workflow: Workflow) -> list[str] | None:
    """The inputs the start node declares; None for a workflow without a start node."""
    starts = [n for n in workflow.children(None) if n.type == "start"]
    if not starts:
        return None
    return [str(v["variable"]) for n in starts for v in n.config.get("variables") or []
            if isinstance(v, Mapping) and v.get("variable")]


def map_columns(workflow: Workflow, columns: Sequence[str], rows: list[dict[str, Any]],
                mapping: Mapping[str, str] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Each row's inputs by start-input name, and the names given.

    ``mapping`` is ``{column: input}``; it beats a column named like the input. Columns that
    are neither mapped nor inputs (nor ``sys.*``) stay out of the runs, reported in one
    warning."""
    mapping = dict(mapping or {})
    declared = declared_inputs(workflow)
    missing = [c for c in mapping if c not in columns]
    if missing:
        raise ValueError(f"columns= maps column {missing[0]!r}, which the inputs do not have "
                         f"(columns: {', '.join(str(c) for c in columns) or 'none'})")
    if declared is not None:
        bad = [i for i in mapping.values()
               if i not in declared and not str(i).startswith("sys.")]
        if bad:
            raise ValueError(f"columns= maps a column to {bad[0]!r}, which is not an input of "
                             f"workflow {workflow.name!r} (its start node takes: "
                             f"{', '.join(declared) or 'nothing'})")
    targets = list(mapping.values())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        raise ValueError(f"columns= maps two columns to input {twice[0]!r}; keep one")
    rename: dict[str, str] = {}
    unknown: list[str] = []
    for column in columns:
        if column in mapping:
            rename[column] = mapping[column]
        elif column in targets:
            continue  # an explicit mapping fills this input
        elif declared is None or column in declared or column.startswith("sys."):
            rename[column] = column
        else:
            unknown.append(column)
    if unknown:
        # Located at the batch, not at a frame of the loop's thread it runs on: shown once
        # per batch, the same on every machine.
        warnings.warn_explicit(
            f"column{'s' if len(unknown) > 1 else ''} {', '.join(repr(c) for c in unknown)} "
            f"{'are' if len(unknown) > 1 else 'is'} not an input of workflow {workflow.name!r} "
            f"(its start node takes: {', '.join(declared or []) or 'nothing'}): kept in the "
            "result, not passed to the runs; map a column to an input with "
            "columns={'column': 'input'}", UserWarning, f"<batch {workflow.name}>", 0)
    if all(rename.get(c) == c for c in columns):
        return rows, list(rename.values())
    return ([{rename[k]: v for k, v in row.items() if k in rename} for row in rows],
            list(rename.values()))


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
                   on_error: OnError = "keep", tracker: Tracker | None = None,
                   positions: Sequence[int] | None = None,
                   log: RowLog | None = None) -> list[RowResult | None]:
    """Run ``compiled`` once per row, at most ``concurrency`` at once, results in row order.

    With ``on_error="raise"`` no row starts after one has failed; the rows in flight finish.
    Rows that never ran are ``None``. ``log(position, run_id)`` hears of each row as its run
    starts, ``positions`` being the rows' places in their batch (default: 0, 1, ...).
    """
    results: list[RowResult | None] = [None] * len(rows)
    todo = iter(range(len(rows)))
    state = {"failed": False}
    places = range(len(rows)) if positions is None else positions

    async def worker() -> None:
        # One shared iterator: next() never awaits, so two workers never take the same row.
        for index in todo:
            if state["failed"]:
                return
            started = None if log is None else functools.partial(log, places[index])
            row = await _run_one(compiled, rows[index], runtime, options, started)
            results[index] = row
            if row.failed and on_error == "raise":
                state["failed"] = True
            if tracker is not None:
                tracker.add([row])

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(rows))):
            group.create_task(worker())
    return results


async def _run_one(compiled: CompiledWorkflow, inputs: Mapping[str, Any], runtime: Runtime,
                   options: Mapping[str, Any],
                   started: Callable[[str], None] | None = None) -> RowResult:
    execution = Execution(compiled, inputs, runtime, **options)
    try:
        if started is not None:
            started(execution.run_id)
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
               cache: bool = False, on_error: OnError = "keep", progress: ProgressOption = True,
               client: Any = None, chunk_size: int | None = None,
               columns: Mapping[str, str] | None = None, batch_id: str | None = None,
               retry: pd.DataFrame | None = None, **run_options: Any) -> pd.DataFrame:
    """Run ``workflow`` once per row of ``inputs`` (a DataFrame, or a list of dicts), at most
    ``concurrency`` rows at once; returns the inputs with a column per output and ``status``,
    ``error``, ``run_id``, ``latency`` (s), ``total_tokens``, ``cost``, on the same index.

    Columns are inputs by name (``sys.query`` sets a system variable); ``columns={column:
    input}`` maps others (and beats a column named like the input); columns that are no
    input are kept in the result, reported once and not passed to the runs. A missing cell is
    a missing input. ``model``, ``store``, ``runtime`` and ``cache`` mean what they mean for
    :func:`cellwire.api.arun`, for every row. A failed row keeps its error and the others go
    on (``on_error="keep"``); ``on_error="raise"`` starts no row after a failure, lets the
    rows in flight finish and raises :class:`MapError` (its ``frame`` has what ran).

    ``progress``: True shows a progress bar (rows done, failed, running cost, rows per
    second), False none, a function is called as ``progress(done, total)``.

    On a store the batch has an id (``result.attrs["batch_id"]``); ``batch_id=`` names one:
    when the store has it (the same inputs), the rows whose runs ended are taken from the
    store and only the others run. ``retry=previous`` (an earlier result over these inputs)
    runs only its failed, stopped and never-run rows again and keeps the others.

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
    frame, given = input_rows(inputs)
    rows, names = map_columns(workflow, [str(c) for c in frame.columns], given, columns)
    both = sorted(set(shared) & set(names))
    if both:
        raise ValueError(f"input {both[0]!r} is both a column and a keyword; drop one")
    if shared:
        rows = [{**shared, **row} for row in rows]
    compiled = _compile(workflow)
    check_columns(workflow, [*names, *shared])
    if client is None and chunk_size is not None:
        raise TypeError("chunk_size= applies to Dask batches only (with client=)")
    done: dict[int, RowResult] = {}
    if retry is not None:
        done = kept_rows(retry, frame)
        batch_id = batch_id or retry.attrs.get(BATCH_ATTR)
    found = store_of(store)
    if found is not None:
        batch_id, resumed = await asyncio.to_thread(open_batch, found, batch_id,
                                                    workflow.name, rows)
        if retry is None:
            done = resumed
    elif batch_id is not None and retry is None:
        raise ValueError(f"batch_id={batch_id!r} resumes a stored batch, and this batch has no "
                         "store; pass store= (a path or True)")
    batch_id = batch_id or new_batch_id()
    todo = [p for p in range(len(rows)) if p not in done]
    tracker = Tracker(len(rows), progress, desc=workflow.name, resumed=done.values())
    try:
        if client is not None:
            from .cluster import make_job, run_on_dask

            job = make_job(workflow, runtime=runtime, store=store, model=model, cache=cache,
                           concurrency=concurrency, options=options, on_error=on_error,
                           batch_id=batch_id if found is not None else None)
            ran = await run_on_dask(client, job, [rows[p] for p in todo], positions=todo,
                                    chunk_size=chunk_size, tracker=tracker)
        else:
            shared_runtime = default_runner().runtime(store=store, model=model, cache=cache,
                                                      base=runtime)
            log = None if found is None else functools.partial(record_row, found, batch_id)
            ran = await run_rows(compiled, [rows[p] for p in todo], shared_runtime,
                                 concurrency=concurrency, options=options, on_error=on_error,
                                 tracker=tracker, positions=todo, log=log)
    finally:
        tracker.close()
    results: list[RowResult | None] = [done.get(p) for p in range(len(rows))]
    for position, row in zip(todo, ran, strict=True):
        results[position] = row
    out = result_frame(frame, compiled, results)
    out.attrs[BATCH_ATTR] = batch_id
    out.attrs[INPUTS_ATTR] = [str(c) for c in frame.columns]
    _remember(batch_id, workflow, dict(
        model=model, concurrency=concurrency, store=store, runtime=runtime, cache=cache,
        on_error=on_error, client=client, chunk_size=chunk_size, columns=columns,
        **run_options))
    if on_error == "raise":
        error = first_failure(out, results)
        if error is not None:
            raise error
    return out


def map(workflow: Workflow, inputs: Any, **kwargs: Any) -> pd.DataFrame:
    """Blocking :func:`amap`, on the runner's long-lived loop (also in a notebook)."""
    return blocking(amap(workflow, inputs, **kwargs))


# -- batches in the store, retries ------------------------------------------------------------


def new_batch_id() -> str:
    return uuid.uuid4().hex[:16]


def store_of(store: StoreOption) -> RunStore | None:
    """The store a batch's rows go to (the runner's default for ``DEFAULT``)."""
    return resolve_store(default_runner().options.store if store is DEFAULT else store)


def inputs_hash(rows: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256((to_json(list(rows)) or "").encode()).hexdigest()


def open_batch(store: RunStore, batch_id: str | None, workflow: str,
               rows: Sequence[Mapping[str, Any]]) -> tuple[str, dict[int, RowResult]]:
    """The batch's id and its finished rows: ``batch_id``'s when the store has it (checked
    to be over the same inputs), else a new batch recorded under ``batch_id`` (or a new id)."""
    digest = inputs_hash(rows)
    found = find_batch(store, batch_id) if batch_id is not None else None
    if found is None:
        batch_id = batch_id or new_batch_id()
        begin_batch(store, Batch(batch_id, workflow, time.time(), len(rows), digest))
        return batch_id, {}
    if found.total != len(rows) or found.inputs_hash != digest:
        raise BatchMismatch(
            f"batch {batch_id!r} ran over other inputs ({found.total} rows of workflow "
            f"{found.workflow!r}; these are {len(rows)}); pass the inputs it ran over, or "
            "leave out batch_id= to start a new batch")
    return found.batch_id, {p: RowResult.stored(r) for p, r in
                            finished_rows(store, found.batch_id).items()}


def kept_rows(previous: pd.DataFrame, frame: pd.DataFrame) -> dict[int, RowResult]:
    """The rows of an earlier result that a retry keeps (not failed, stopped or never run),
    by position, as row results."""
    if "status" not in previous.columns:
        raise TypeError("retry= takes an earlier result of map (it has a 'status' column)")
    if len(previous) != len(frame) or not previous.index.equals(frame.index):
        raise ValueError(f"retry= has {len(previous)} rows and the inputs {len(frame)} (or "
                         "another index); pass the inputs the earlier result was made from")
    inputs = {str(c) for c in frame.columns}
    outputs: dict[str, str] = {}
    for column in [str(c) for c in previous.columns]:
        if column in inputs or column in RESULT_COLUMNS:
            continue
        name = column.removeprefix("output.")
        if name != column and name not in inputs and name not in RESULT_COLUMNS:
            name = column
        outputs[name] = column
    kept: dict[int, RowResult] = {}
    for position, record in enumerate(previous.to_dict("records")):
        status = str(record["status"])
        if status in RETRIED:
            continue
        cost = record.get("cost")
        kept[position] = RowResult(
            status, None, None, _cell(record.get("run_id")),
            float(record.get("latency") or 0.0), int(record.get("total_tokens") or 0),
            math.nan if cost is None else float(cost),
            {name: _cell(record.get(column)) for name, column in outputs.items()})
    return kept


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return value
    return None if _missing(value) else _plain(value)


#: Batches this process ran: their workflow and options, for :func:`retry_failed`.
_BATCHES: OrderedDict[str, tuple[weakref.ref[Workflow], dict[str, Any]]] = OrderedDict()
_KEEP_BATCHES = 64


def _remember(batch_id: str, workflow: Workflow, options: dict[str, Any]) -> None:
    _BATCHES[batch_id] = (weakref.ref(workflow), options)
    _BATCHES.move_to_end(batch_id)
    while len(_BATCHES) > _KEEP_BATCHES:
        _BATCHES.popitem(last=False)


def _retry_args(result: pd.DataFrame, workflow: Workflow | None,
                overrides: dict[str, Any]) -> tuple[Workflow, pd.DataFrame, dict[str, Any]]:
    batch_id = result.attrs.get(BATCH_ATTR)
    columns = result.attrs.get(INPUTS_ATTR)
    if batch_id is None or columns is None:
        raise ValueError("this frame does not say which batch it is (its attrs were lost, by "
                         "a merge say); call wf.map(inputs, retry=result) instead")
    remembered = _BATCHES.get(batch_id)
    options = dict(remembered[1]) if remembered is not None else {}
    if workflow is None and remembered is not None:
        workflow = remembered[0]()
    if workflow is None:
        raise ValueError(f"batch {batch_id} did not run in this process; pass its workflow: "
                         "retry_failed(result, workflow=wf)")
    options.update(overrides)
    return workflow, result[list(columns)], options


def retry_failed(result: pd.DataFrame, workflow: Workflow | None = None,
                 **options: Any) -> pd.DataFrame:
    """Run the failed (and never-run) rows of a batch's ``result`` again, with the options the
    batch had (``options`` override them); the other rows are kept. The same as
    ``wf.map(inputs, retry=result)``; in the store, the retried rows join the same batch."""
    workflow, inputs, merged = _retry_args(result, workflow, options)
    return map(workflow, inputs, retry=result, **merged)


async def aretry_failed(result: pd.DataFrame, workflow: Workflow | None = None,
                        **options: Any) -> pd.DataFrame:
    """:func:`retry_failed` as a coroutine."""
    workflow, inputs, merged = _retry_args(result, workflow, options)
    return await amap(workflow, inputs, retry=result, **merged)
