"""The run store as checkpointer: per-node writes through the store's writer, read back on
resume.

A run's start records its version and what a resume needs (``checkpoints``); each finished
top-level node adds one row to ``checkpoint_writes`` in the same transaction as the trace rows
the run produced since the previous one, so a killed process keeps the trace of everything it
keeps. Nothing waits on the event loop: the writes go to the store's writer thread, which
commits whatever is queued in one transaction (WAL, ``synchronous=NORMAL``). In ``sync``
durability the node's successors wait for that commit; in ``async`` nothing waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import socket
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellwire.engine.checkpoint import Durability, Restored
from cellwire.engine.node import Usage
from cellwire.engine.state import NodeStatus
from cellwire.model import WorkflowError

from .codec import from_json, to_json
from .forms import read_forms
from .seal import SEALED_PREFIX, Sealer, SealError, sealer
from .versions import version_of
from .writer import StoreError, Write
from .writes import NodeWrites, write_begin

if TYPE_CHECKING:
    from cellwire.engine.executor import Execution

    from .sqlite import RunStore

#: Run states a resume refuses: the run is over.
FINISHED = ("succeeded", "partial-succeeded")


class NotResumable(RuntimeError):
    """The run cannot be resumed; the message says why and what to do."""


@dataclass(slots=True)
class SavedRun:
    """A stored run's checkpoint: the version it ran and the state to resume from."""

    restored: Restored
    status: str
    version: str
    definition: str
    durability: str
    #: The process that last ran it: (pid, host, process start time).
    process: tuple[int | None, str | None, str | None]
    #: The id of the key its values are sealed with (None: not sealed).
    sealed: str | None = None


class StoreCheckpointer:
    """Checkpoints of the runs of one store (``store.checkpoints``)."""

    def __init__(self, store: RunStore):
        self.store = store

    def __repr__(self) -> str:
        return f"StoreCheckpointer({str(self.store.path)!r})"

    def begin(self, run: Execution, durability: Durability,
              resumed: Restored | None) -> RunCheckpoint | None:
        state = run.state
        try:
            version, definition = version_of(run.compiled)
        except WorkflowError as exc:
            # Only a workflow built in Python can hold what YAML cannot: it runs as before.
            why = str(exc).replace("\n", ": ", 1).replace("\n", "; ")
            warnings.warn(f"run {run.run_id} records no version and keeps no checkpoints (it "
                          f"cannot be resumed): {why}", RuntimeWarning, stacklevel=2)
            return None
        seal: Sealer | None = None
        if state.secrets and durability != "exit":
            try:
                seal = sealer()
            except SealError as exc:
                warnings.warn(f"run {run.run_id} keeps no checkpoints and cannot be resumed: "
                              f"{exc}", RuntimeWarning, stacklevel=2)
                durability = "exit"
        record = None
        if durability != "exit" and resumed is None:
            record = to_json({
                "workflow": run.compiled.workflow.name, "inputs": run.inputs,
                "system": state.pool.outputs("sys"),
                "conversation": state.pool.outputs("conversation"),
                "options": {"concurrency": run.concurrency, "max_steps": run.max_steps,
                            "max_time": run.max_time, "durability": durability},
                "secrets": sorted(state.secrets),
            }) or "{}"
            if seal is not None:
                record = seal.seal(record, f"{run.run_id}/")
        answer = None
        if resumed is not None:
            answer = state.redactor.text("".join(state.answer))
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        if not self._submit(run.run_id, "checkpoint", functools.partial(
            write_begin, run_id=run.run_id, version=version,
            workflow=run.compiled.workflow.name, definition=definition, created_at=time.time(),
            durability=durability, sealed=None if seal is None else seal.key_id, state=record,
            process=_this_process(), resumed_answer=answer), started):
            return None
        if durability == "exit":
            return None
        return RunCheckpoint(self, run, seal, started)

    def _submit(self, run_id: str, kind: str, apply: Any,
                done: concurrent.futures.Future[None] | None = None) -> bool:
        """Queue a write; False when the store takes none (closed): the store's layer reports
        that the run is not stored, and a checkpoint never fails its run."""
        store = self.store
        try:
            store.writer.submit(Write(run_id, apply, time.monotonic() + store.timeout, kind,
                                      done))
        except StoreError:
            return False
        return True

    # -- reading ----------------------------------------------------------------------------

    def load(self, run_id: str) -> SavedRun:
        """The checkpoint of run ``run_id`` (a unique prefix is enough)."""
        store = self.store
        full = store.resolve(run_id)
        with store._lock:
            conn = store._conn
            status = conn.execute("SELECT status FROM runs WHERE run_id = ?",
                                  (full,)).fetchone()[0]
            row = conn.execute(
                "SELECT c.version, c.durability, c.sealed, c.state, c.pid, c.host, "
                "c.process_start, v.definition FROM checkpoints c LEFT JOIN versions v "
                "ON v.hash = c.version WHERE c.run_id = ?", (full,)).fetchone()
            if row is None:
                raise NotResumable(
                    f"run {full} keeps no checkpoint: it ran with durability='exit', its "
                    "workflow could not be written as YAML, or it was stored before cellwire "
                    "kept checkpoints; run the workflow again")
            writes = conn.execute(
                "SELECT node_id, status, handle, steps, outputs, conversation "
                "FROM checkpoint_writes WHERE run_id = ? ORDER BY seq", (full,)).fetchall()
            totals = conn.execute(
                "SELECT coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
                "coalesce(sum(total_tokens), 0), CASE WHEN count(*) > count(cost) THEN NULL "
                "ELSE coalesce(sum(cost), 0) END, coalesce(sum(status = 'exception'), 0) "
                "FROM node_executions WHERE run_id = ? AND status != 'skipped'",
                (full,)).fetchone()
            blobs = store._blobs([w[4] for w in writes] + [w[5] for w in writes])
            forms = read_forms(conn, full)
        version, durability, sealed, state_text, pid, host, started, definition = row
        if definition is None:
            raise NotResumable(f"run {full}: the store lost its version {version}")
        seal = _opener(full, sealed)

        def value(text: str | None, where: str) -> Any:
            if text is not None and text.startswith(SEALED_PREFIX):
                assert seal is not None, "a sealed value in a run that was not sealed"
                return from_json(seal.open(text, f"{full}/{where}"))
            return from_json(text, blobs)

        state = value(state_text, "")
        restored = Restored(
            run_id=full, workflow=state["workflow"], inputs=state["inputs"],
            system=state["system"] or {}, conversation=state["conversation"] or {},
            options=state["options"], secrets=list(state["secrets"]))
        for node_id, node_status, handle, steps, outputs, conversation in writes:
            restored.nodes[node_id] = (NodeStatus(node_status), handle)
            restored.outputs[node_id] = value(outputs, node_id) or {}
            restored.steps = max(restored.steps, steps)
            if conversation is not None:
                restored.conversation = value(conversation, f"{node_id}/conversation")
        for stored, answer_text in forms:
            node_id = stored.form.node_id
            restored.forms[node_id] = stored.form
            if stored.answer is not None:
                restored.answers[node_id] = replace(
                    stored.answer, values=value(answer_text, f"{node_id}/answer") or {})
        prompt, completion, total, cost, exceptions = totals
        restored.usage = Usage(prompt, completion, total,
                               float("nan") if cost is None else cost)
        restored.exceptions = exceptions
        return SavedRun(restored, status, version, definition, durability, (pid, host, started),
                        sealed)


class RunCheckpoint:
    """The checkpoint of one running run: takes its node writes."""

    __slots__ = ("_conversation", "_last", "_last_conversation", "_owner", "_run", "_seal",
                 "_sink", "_started", "_writer")

    def __init__(self, owner: StoreCheckpointer, run: Execution, seal: Sealer | None,
                 started: concurrent.futures.Future[None]):
        self._owner = owner
        self._started = started
        self._run = run
        self._seal = seal
        self._sink = owner.store.sink
        self._writer = owner.store.writer
        #: The run's last queued writes, and the Write that carries them: nodes that finish
        #: before the writer takes it are added to it.
        self._last: tuple[NodeWrites, Write] | None = None
        #: Conversation variables are written with a node only when they changed.
        self._conversation = bool(run.compiled.workflow.conversation_variables)
        self._last_conversation = to_json(run.state.pool.outputs("conversation"))

    def started(self) -> Any:
        return _committed(self._started)

    def put(self, node_id: str, handle: str | None, wait: bool) -> Any:
        run = self._run
        state = run.state
        run_id = run.run_id
        seal = self._seal
        conversation = None
        if self._conversation:
            text = to_json(state.pool.outputs("conversation"))
            if text != self._last_conversation:
                self._last_conversation = conversation = text
                if seal is not None and text is not None:
                    conversation = seal.seal(text, f"{run_id}/{node_id}/conversation")
        node = (node_id, state.nodes[node_id].value, handle, state.steps,
                state.pool.outputs(node_id), conversation)
        rows = self._sink.take_rows(run_id)
        last = self._last
        if not wait and last is not None and self._writer.add_to_last(last[1], last[0].add,
                                                                        node, rows):
            return None
        writes = NodeWrites(run_id, None if seal is None else seal.seal)
        writes.add(node, rows)
        done: concurrent.futures.Future[None] | None = \
            concurrent.futures.Future() if wait else None
        store = self._owner.store
        write = Write(run_id, writes, time.monotonic() + store.timeout, "checkpoint", done)
        try:
            self._writer.submit(write)
        except StoreError:
            self._last = None
            return None  # the store is closed: its layer reports that the run is not stored
        # A write someone waits for is never added to: it is committed as it was queued.
        self._last = None if wait else (writes, write)
        return None if done is None else _committed(done)


async def _committed(done: concurrent.futures.Future[None]) -> None:
    try:
        await asyncio.wrap_future(done)
    except StoreError:
        pass  # the writer keeps it: the run's end reports that it is not fully stored


def _opener(run_id: str, key_id: str | None) -> Sealer | None:
    if key_id is None:
        return None
    try:
        found = sealer()
    except SealError as exc:
        raise NotResumable(f"run {run_id}: its checkpoint is encrypted and {exc}") from exc
    if found.key_id != key_id:
        raise NotResumable(
            f"run {run_id}: its checkpoint is encrypted with another store key (id {key_id}, "
            f"this one is {found.key_id}); set CELLWIRE_STORE_KEY to the key it was run with")
    return found


def _this_process() -> tuple[int, str, str | None]:
    return _process(os.getpid())


@functools.lru_cache(maxsize=4)
def _process(pid: int) -> tuple[int, str, str | None]:
    # By pid: a forked child is another process. (A host renamed while it runs keeps the
    # name it had, as this process's other records do.)
    return pid, socket.gethostname(), process_start(pid)


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), to tell it from a later process
    given the same pid; None where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def still_running(process: tuple[int | None, str | None, str | None]) -> bool:
    """Whether the process that last ran a run is alive (on this machine)."""
    pid, host, started = process
    if pid is None or host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False  # this very process: its runs are in the runner's registry, not here
    now = process_start(pid)
    return now is not None and now == started


__all__ = ["FINISHED", "NotResumable", "RunCheckpoint", "SavedRun", "StoreCheckpointer",
           "process_start", "still_running"]
