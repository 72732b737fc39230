"""The layer that fills the run store.

Its hooks run on the event loop and only queue: a node costs it a list append (of the event
that ended it; the writer thread makes it a trace row), and the rows go to the store's writer
thread with the run's checkpoints, in batches (:data:`FLUSH_ROWS`) and at the run's end.
The ``runs`` row is written at the start (status ``running``, with the process that runs it,
whose heartbeat :class:`~cellwire.store.liveness.Heartbeat` keeps fresh), so a run whose
process dies is still visible, and reads as ``interrupted``. The conversation variables a run
assigns (the ``updated_variables`` of succeeded nodes: the variable assigner's) are saved
with its end, for its conversation's next turn. ``on_run_end`` returns an awaitable that completes once the run is committed,
or raises :class:`~cellwire.store.writer.StoreError` saying why it could not be stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cellwire.engine.events import (
    Event,
    NodeFinished,
    NodeSkipped,
    NodeSucceeded,
    RunFailed,
    RunPartialSucceeded,
    RunPaused,
    RunStarted,
    RunStopped,
    RunSucceeded,
    StreamChunk,
)
from cellwire.engine.layers import Layer
from cellwire.engine.result import RunResult
from cellwire.engine.state import RunStatus

from .liveness import Heartbeat, this_process
from .writer import Write
from .writes import write_end, write_nodes, write_start

if TYPE_CHECKING:
    from .sqlite import RunStore

#: A long run hands its rows to the writer in batches of this many, bounding memory and what
#: a crash loses.
FLUSH_ROWS = 1000


@dataclass(slots=True)
class _Run:
    started_at: float
    workflow: str = ""
    inputs: Any = None
    #: Events that ended node executions: the writer thread makes them trace rows.
    rows: list[NodeFinished | NodeSkipped] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    #: Conversation variables the run assigned, by name, last write last.
    conversation: dict[str, Any] = field(default_factory=dict)


class StoreSink(Layer):
    """The layer that persists runs to its store; many runs may interleave."""

    persists = True
    #: The store bounds the wait itself: the writer gives up at the store timeout.
    end_timeout = None

    def __init__(self, store: RunStore):
        self.store = store
        self._runs: dict[str, _Run] = {}
        #: Runs whose end is queued, until ``on_run_end`` collects the commit's future.
        self._ends: dict[str, concurrent.futures.Future[None]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {}
        self._heartbeat = Heartbeat(store)

    def __repr__(self) -> str:
        return f"StoreSink({str(self.store.path)!r})"

    def take_rows(self, run_id: str) -> list[NodeFinished | NodeSkipped]:
        """The run's trace rows not handed to the writer yet (a checkpoint writes them in its
        own transaction, so a crash keeps the trace of every node it keeps)."""
        run = self._runs.get(run_id)
        if run is None or not run.rows:
            return []
        rows, run.rows = run.rows, []
        return rows

    def on_event(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is None:
            handler = self._handlers[type(event)] = self._handler_for(type(event))
        handler(event)

    def on_run_end(self, result: RunResult) -> Awaitable[None] | None:
        done = self._ends.pop(result.run_id, None)
        if done is None:
            return None  # this sink never saw the run's end: nothing of it is pending
        return self._committed(done)

    @staticmethod
    async def _committed(done: concurrent.futures.Future[None]) -> None:
        # Completed on this loop through call_soon_threadsafe. No loop timer bounds it: the
        # writer itself gives up at the store timeout (or settles everything if it dies).
        await asyncio.wrap_future(done)

    # -- events ---------------------------------------------------------------------------

    def _handler_for(self, kind: type) -> Callable[[Any], None]:
        if issubclass(kind, RunStarted):
            return self._on_run_started
        if issubclass(kind, (RunSucceeded, RunPartialSucceeded, RunFailed, RunStopped,
                             RunPaused)):
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

    def _submit(self, run_id: str, kind: str, apply: Callable[..., None],
                done: concurrent.futures.Future[None] | None = None) -> None:
        deadline = time.monotonic() + self.store.timeout
        self.store.writer.submit(Write(run_id, apply, deadline, kind, done))

    def _on_run_started(self, event: RunStarted) -> None:
        self._runs[event.run_id] = _Run(started_at=event.time, workflow=event.workflow,
                                        inputs=event.inputs)
        self._submit(event.run_id, "start", functools.partial(
            write_start, run_id=event.run_id, workflow=event.workflow, inputs=event.inputs,
            started_at=event.time, resume=event.reason != "initial", owner=this_process()))
        self._heartbeat.add(event.run_id)

    def _on_node_finished(self, event: NodeFinished | NodeSkipped) -> None:
        run = self._run(event)
        run.rows.append(event)
        if type(event) is NodeSucceeded and "updated_variables" in event.process_data:
            _note_assigned(run.conversation, event.process_data["updated_variables"])
        if len(run.rows) >= FLUSH_ROWS:
            rows, run.rows = run.rows, []
            self._submit(event.run_id, "nodes",
                         functools.partial(write_nodes, run_id=event.run_id, rows=rows))

    def _on_chunk(self, event: StreamChunk) -> None:
        # The same rule as the executor's: the run's answer is what answer nodes stream.
        if event.node_type == "answer":
            self._run(event).answer.append(event.text)

    def _on_run_ended(self, event: Event) -> None:
        run = self._runs.pop(event.run_id, None) or _Run(started_at=event.time)
        self._heartbeat.discard(event.run_id)
        status, outputs, error, error_node = _end_state(event)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._submit(event.run_id, "end", functools.partial(
            write_end, run_id=event.run_id, status=status, finished_at=event.time,
            outputs=outputs, error=error, error_node=error_node, answer="".join(run.answer),
            rows=run.rows, started_at=run.started_at, workflow=run.workflow,
            inputs=run.inputs, conversation=run.conversation,
            forms=event.forms if isinstance(event, RunPaused) else ()), done)
        self._ends[event.run_id] = done


def _end_state(event: Event) -> tuple[str, Any, str | None, str | None]:
    if isinstance(event, RunSucceeded):
        return str(RunStatus.SUCCEEDED), event.outputs, None, None
    if isinstance(event, RunPartialSucceeded):
        return str(RunStatus.PARTIAL_SUCCEEDED), event.outputs, None, None
    if isinstance(event, RunFailed):
        return str(RunStatus.FAILED), None, event.error, event.node_id
    if isinstance(event, RunPaused):
        return str(RunStatus.PAUSED), event.outputs, None, None
    assert isinstance(event, RunStopped)
    return str(RunStatus.STOPPED), None, event.reason, None


def _note_assigned(conversation: dict[str, Any], updated: Any) -> None:
    # The assigner's process data: [{"selector": [scope, name], "new_value": ...}, ...].
    for item in updated if isinstance(updated, list) else ():
        selector = item.get("selector") if isinstance(item, dict) else None
        if isinstance(selector, list) and len(selector) == 2 and selector[0] == "conversation":
            conversation[str(selector[1])] = item.get("new_value")


def _ignore(event: Event) -> None:
    return None
