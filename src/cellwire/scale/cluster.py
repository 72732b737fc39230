"""The Dask backend of ``map``: row chunks shipped to workers, each run by the local pool.

A coroutine task still holds a Dask worker thread, so one task per row would serialize on
the threads (engine-peers notes §4.2). A task is a chunk of rows instead, run on the worker
with the same bounded asyncio pool as a local batch (``concurrency`` rows at once per chunk).
At most one chunk per worker thread is in flight: the next is submitted when one ends, so
``on_error="raise"`` can stop submitting and let only the chunks in flight finish.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cellwire.engine import RunStatus, Runtime, compile_workflow
from cellwire.model import Workflow
from cellwire.runner import StoreOption, default_runner
from cellwire.store import RunStore
from cellwire.store.batches import record_row

from .batch import OnError, RowResult, run_rows, store_of
from .progress import Tracker

#: A chunk is at most this many times the rows one chunk runs at once.
CHUNK_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class Job:
    """What every chunk of one batch shares; scattered to the workers once."""

    workflow: Workflow
    runtime: Runtime | None
    store: StoreOption
    model: str | None
    cache: bool
    concurrency: int
    options: Mapping[str, Any]
    on_error: OnError
    #: The stored batch the rows belong to (the worker records each row's run there).
    batch_id: str | None = None


async def run_chunk(job: Job, rows: Sequence[Mapping[str, Any]],
                    positions: Sequence[int] | None = None) -> list[RowResult | None]:
    """A Dask task: run ``rows`` (``positions`` in their batch) on the worker's event loop.

    One loop per worker for every chunk, not one per chunk: the process-wide LLM rate
    limiters and the providers' connection pools are bound to a loop, and stay warm.
    """
    compiled = compile_workflow(job.workflow)
    runtime = default_runner().runtime(store=job.store, model=job.model, cache=job.cache,
                                       base=job.runtime)
    log = None
    if job.batch_id is not None:
        store = store_of(job.store)
        if store is not None:
            log = functools.partial(record_row, store, job.batch_id)
    return await run_rows(compiled, rows, runtime, concurrency=job.concurrency,
                          options=job.options, on_error=job.on_error, positions=positions,
                          log=log)


def shippable_store(store: StoreOption) -> StoreOption:
    """A store option a worker can open: a path instead of an open store."""
    if isinstance(store, RunStore):
        return str(store.path)
    if isinstance(store, os.PathLike):
        return os.fspath(store)
    return store


def make_job(workflow: Workflow, *, runtime: Runtime | None, store: StoreOption,
             model: str | None, cache: bool, concurrency: int, options: Mapping[str, Any],
             on_error: OnError, batch_id: str | None = None) -> Job:
    import cloudpickle

    job = Job(workflow, runtime, shippable_store(store), model, cache, concurrency,
              dict(options), on_error, batch_id)
    try:
        cloudpickle.dumps(job)
    except Exception as exc:  # noqa: BLE001 - what fails to pickle varies: say which part
        part = "runtime" if runtime is not None else "workflow"
        raise TypeError(f"the {part} cannot be sent to Dask workers ({type(exc).__name__}: "
                        f"{exc}); with client=, pass a runtime without open stores or "
                        "connections (store= says where workers store runs), or none") from None
    return job


@dataclass
class _Driver:
    """Submits chunks, at most ``slots`` in flight, and files their results in row order."""

    client: Any
    job: Any  # the scattered Job
    rows: Sequence[Mapping[str, Any]]
    positions: Sequence[int]
    spans: list[range]
    slots: int
    on_error: OnError
    tracker: Tracker | None
    results: list[RowResult | None] = field(init=False)
    _next: int = 0
    _failed: bool = False
    _spans: dict[str, range] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.rows)
        self._batch = uuid.uuid4().hex[:12]

    def submit_next(self) -> Any | None:
        if self._failed or self._next >= len(self.spans):
            return None
        span = self.spans[self._next]
        key = f"cellwire-map-{self._batch}-{self._next}"
        self._next += 1
        future = self.client.submit(run_chunk, self.job, [self.rows[i] for i in span],
                                    [self.positions[i] for i in span], key=key, pure=False)
        self._spans[future.key] = span
        return future

    def first(self) -> list[Any]:
        return [f for f in (self.submit_next() for _ in range(self.slots)) if f is not None]

    def settle(self, future: Any, value: list[RowResult | None] | BaseException) -> None:
        span = self._spans.pop(future.key)
        if isinstance(value, BaseException):
            # The task itself failed (a worker died, a node type missing there): its rows
            # fail with the reason, the other chunks go on.
            error = f"the Dask task for rows {span.start}-{span.stop - 1} failed: " \
                    f"{type(value).__name__}: {value}"
            value = [RowResult(str(RunStatus.FAILED), error) for _ in span]
        for position, row in zip(span, value, strict=True):
            self.results[position] = row
            if row is not None:
                self._failed = self._failed or (row.failed and self.on_error == "raise")
        if self.tracker is not None:
            self.tracker.add(value)


def chunk_spans(total: int, chunk_size: int | None, threads: int, concurrency: int) -> list[range]:
    """Row ranges of the chunks: by default one per worker thread, at most CHUNK_ROUNDS
    times ``concurrency`` rows each, so a chunk fills its pool and threads share the rows."""
    if chunk_size is None:
        chunk_size = min(math.ceil(total / max(threads, 1)), CHUNK_ROUNDS * concurrency)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: a chunk needs at least 1 row")
    return [range(i, min(i + chunk_size, total)) for i in range(0, total, chunk_size)]


async def run_on_dask(client: Any, job: Job, rows: Sequence[Mapping[str, Any]], *,
                      positions: Sequence[int] | None = None, chunk_size: int | None = None,
                      tracker: Tracker | None = None) -> list[RowResult | None]:
    """Run ``job`` over ``rows`` (``positions`` in their batch) on ``client``'s cluster;
    results in row order (``None`` for rows that never ran)."""
    if not rows:
        return []
    if client.asynchronous:
        threads = sum((await client.nthreads()).values())
        shipped = await client.scatter(job, broadcast=True, hash=False)
    else:
        threads = sum(client.nthreads().values())
        shipped = client.scatter(job, broadcast=True, hash=False)
    driver = _Driver(client, shipped, rows,
                     range(len(rows)) if positions is None else positions,
                     chunk_spans(len(rows), chunk_size, threads, job.concurrency),
                     max(threads, 1), job.on_error, tracker)
    if client.asynchronous:
        await _drive_async(driver)
    else:
        # A blocking client waits on a helper thread, so this loop (a notebook's) stays free.
        await asyncio.to_thread(_drive, driver)
    return driver.results


def _drive(driver: _Driver) -> None:
    from distributed import as_completed

    pending = as_completed(driver.first())
    for future in pending:
        driver.settle(future, _outcome(future.result))
        more = driver.submit_next()
        if more is not None:
            pending.add(more)


async def _drive_async(driver: _Driver) -> None:
    from distributed import as_completed

    pending = as_completed(driver.first())
    async for future in pending:
        try:
            value = await future
        except Exception as exc:  # noqa: BLE001 - filed as the chunk's rows' error
            value = exc
        driver.settle(future, value)
        more = driver.submit_next()
        if more is not None:
            pending.add(more)


def _outcome(result: Callable[[], Any]) -> Any:
    try:
        return result()
    except Exception as exc:  # noqa: BLE001 - filed as the chunk's rows' error
        return exc
