"""The event sink that fills the run store.

It keeps a run's trace rows in memory and writes them in one transaction when the run ends,
so a node costs the sink a dict and a list append. The ``runs`` row is written at the start
(status ``running``), so a run whose process dies is still visible.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cellwire.engine.events import (
    Event,
    NodeFinished,
    NodeSkipped,
    RunFailed,
    RunPartialSucceeded,
    RunStarted,
    RunStopped,
    RunSucceeded,
    StreamChunk,
)
from cellwire.engine.result import trace_row
from cellwire.engine.state import RunStatus

if TYPE_CHECKING:
    from .sqlite import RunStore

#: A long run writes its rows in batches of this many, bounding memory and what a crash loses.
FLUSH_ROWS = 1000


@dataclass(slots=True)
class _Run:
    started_at: float
    next_seq: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)


class StoreSink:
    """Subscribe to a :class:`~cellwire.Runtime` to persist its runs; many runs may interleave."""

    __slots__ = ("_handlers", "_runs", "store")

    def __init__(self, store: RunStore):
        self.store = store
        self._runs: dict[str, _Run] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {}

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is None:
            handler = self._handlers[type(event)] = self._handler_for(type(event))
        handler(event)

    def _handler_for(self, kind: type) -> Callable[[Any], None]:
        if issubclass(kind, RunStarted):
            return self._on_run_started
        if issubclass(kind, (RunSucceeded, RunPartialSucceeded, RunFailed, RunStopped)):
            return self._on_run_ended
        if issubclass(kind, (NodeFinished, NodeSkipped)):
            return self._on_node_finished
        if issubclass(kind, StreamChunk):
            return self._on_chunk
        return _ignore

    def _run(self, event: Event) -> _Run:
        run = self._runs.get(event.run_id)
        if run is None:
            run = self._runs[event.run_id] = _Run(started_at=event.time)
        return run

    def _on_run_started(self, event: RunStarted) -> None:
        run = self._runs[event.run_id] = _Run(started_at=event.time)
        try:
            run.next_seq = self.store.start_run(event.run_id, event.workflow, event.inputs,
                                                event.time, resume=event.reason != "initial")
        except sqlite3.Error as exc:
            _warn(event.run_id, exc)

    def _on_node_finished(self, event: NodeFinished | NodeSkipped) -> None:
        run = self._run(event)
        run.rows.append(trace_row(event))
        if len(run.rows) >= FLUSH_ROWS:
            rows, run.rows = run.rows, []
            try:
                self.store.write_nodes(run.next_seq, rows)
            except sqlite3.Error as exc:
                _warn(event.run_id, exc)
            run.next_seq += len(rows)

    def _on_chunk(self, event: StreamChunk) -> None:
        # The same rule as the executor's: the run's answer is what answer nodes stream.
        if event.node_type == "answer":
            self._run(event).answer.append(event.text)

    def _on_run_ended(self, event: Event) -> None:
        run = self._runs.pop(event.run_id, None) or _Run(started_at=event.time)
        status, outputs, error, error_node = _end_state(event)
        try:
            self.store.finish_run(
                event.run_id, status, finished_at=event.time, outputs=outputs, error=error,
                error_node=error_node, answer="".join(run.answer), first_seq=run.next_seq,
                rows=run.rows, started_at=run.started_at,
            )
        except sqlite3.Error as exc:
            _warn(event.run_id, exc)


def _end_state(event: Event) -> tuple[str, Any, str | None, str | None]:
    if isinstance(event, RunSucceeded):
        return str(RunStatus.SUCCEEDED), event.outputs, None, None
    if isinstance(event, RunPartialSucceeded):
        return str(RunStatus.PARTIAL_SUCCEEDED), event.outputs, None, None
    if isinstance(event, RunFailed):
        return str(RunStatus.FAILED), None, event.error, event.node_id
    assert isinstance(event, RunStopped)
    return str(RunStatus.STOPPED), None, event.reason, None


def _ignore(event: Event) -> None:
    return None


def _warn(run_id: str, exc: sqlite3.Error) -> None:
    # A full disk or a locked file must not fail the run itself: say so and go on.
    warnings.warn(f"cellwire could not store run {run_id}: {exc}", RuntimeWarning, stacklevel=3)
