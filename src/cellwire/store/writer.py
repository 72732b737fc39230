"""The run store's writer: one thread per store owns every write, never the event loop.

Writes are queued; the thread takes everything queued at once and commits it in one
transaction (group commit: runs that end together cost one commit). A database another
process holds locked is retried on this thread, with backoff, until the store timeout of the
oldest write in the batch has passed; a run's end then fails with a message that says so. A
write that fails for another reason (a full disk, say) is retried alone, so it never takes
other runs down with it.

The thread starts with the first write and ends after a second without work (a store used
once leaves no thread behind); ``close()`` and interpreter exit drain what is queued.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cellwire.engine.layers import LayerError

#: Seconds without work after which the writer thread ends (a later write starts another).
IDLE_SECONDS = 1.0
#: SQLite's own wait on a lock, per attempt; the writer's retries wait the rest, so the
#: store timeout is honoured to within this much.
ATTEMPT_BUSY_MS = 250
_FIRST_DELAY, _MAX_DELAY = 0.01, 0.5
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes)


class StoreError(LayerError):
    """A run could not be written to its store; the message says why and what to do."""


@dataclass(slots=True, eq=False)
class Write:
    """One queued write: ``apply(connection)`` runs inside the batch's transaction."""

    run_id: str
    apply: Callable[[sqlite3.Connection], None]
    #: When the write gives up waiting for a locked database (``time.monotonic()``).
    deadline: float
    #: Kind of write: ``start``, ``nodes`` (rows the run's end depends on), ``checkpoint`` (a
    #: node's checkpoint and rows), ``end``, ``flush``.
    kind: str
    #: Completed when the write is committed (``end``, ``flush`` and waited-for checkpoints).
    done: concurrent.futures.Future[None] | None = field(default=None)


class WriterConnection(sqlite3.Connection):
    """The writer thread's connection, with what it knows of what it wrote, so a write does
    not ask the database again: the next ``seq`` of each running run's rows in
    ``node_executions`` and ``checkpoint_writes``, the versions stored, and the runs whose
    row it wrote (their end need not make it). With the multi-row inserts
    (:func:`.writes.insert_rows`) a batch row takes half the statements it did (24 -> 12.3);
    fewer than that no longer speeds a batch up (merging a writer cycle's inserts per table
    cut another third and left rows/s as they were: the store's CPU is what limits it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (table, run_id) -> the seq of the run's next row in that table.
        self.next_seq: dict[tuple[str, str], int] = {}
        self.versions: set[str] = set()
        #: Runs whose row in ``runs`` it wrote, until their end.
        self.started: set[str] = set()

    def forget(self) -> None:
        """Drop what it knows (after a rollback, the database no longer holds it)."""
        self.next_seq.clear()
        self.versions.clear()
        self.started.clear()


class Writer:
    """The queue and the thread that write one store's runs."""

    def __init__(self, path: str, connect: Callable[[], WriterConnection]):
        self.path = path
        self._connect = connect
        self._cond = threading.Condition()
        self._items: deque[Write] = deque()
        #: The last queued write of each run, until the thread takes the queue.
        self._last: dict[str, Write] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Runs some of whose rows were lost: their end reports it instead of success.
        self._lost: dict[str, str] = {}
        _writers.add(self)

    def submit(self, write: Write) -> None:
        """Queue ``write``; starts the thread when none runs. Never blocks on the database."""
        with self._cond:
            if self._closed:
                raise StoreError(f"the run store {self.path} is closed; open it again with "
                                 "cellwire.store.open_store(path)")
            self._items.append(write)
            if write.run_id:
                self._last[write.run_id] = write
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"cellwire-store-writer {self.path}")
                self._thread.start()
            else:
                self._cond.notify()

    def add_to_last(self, write: Write, add: Callable[..., None], *args: Any) -> bool:
        """Call ``add(*args)`` (which changes what ``write`` will apply) if ``write`` is still
        the last queued write of its run, so the thread has not taken it and it stays in
        order after the run's earlier writes (other runs' writes are independent of it);
        False otherwise (submit a new write instead)."""
        with self._cond:
            if self._last.get(write.run_id) is not write or self._closed:
                return False
            add(*args)
            return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what was queued before this call is written (or given up); False if
        ``timeout`` seconds passed first."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.submit(Write("", _nothing, float("inf"), "flush", done))
        try:
            done.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Refuse new writes, write what is queued, and wait for the thread to end."""
        with self._cond:
            self._closed = True
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def running(self) -> bool:
        """Whether the writer thread is alive now."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        conn: WriterConnection | None = None
        batch: list[Write] = []
        try:
            while True:
                with self._cond:
                    if not self._items and not self._closed:
                        self._cond.wait(IDLE_SECONDS)
                    if not self._items:
                        self._thread = None
                        return
                    batch = list(self._items)
                    self._items.clear()
                    self._last.clear()
                conn = self._commit(conn, batch)
                batch = []
        except BaseException as exc:
            # The thread dies (a bug, or the interpreter tearing down): nothing queued may
            # wait forever, and a later write starts a new thread.
            with self._cond:
                rest = [*batch, *self._items]
                self._items.clear()
                self._last.clear()
                self._thread = None
            error = StoreError(
                f"the writer thread of the run store {self.path} died "
                f"({type(exc).__name__}: {exc}); what it had not committed is lost, and a run "
                "it started may show as 'running' in the store. Run it again; report the error "
                "if it repeats")
            for write in rest:
                self._settle(write, error)
            raise
        finally:
            if conn is not None:
                conn.close()

    def _commit(self, conn: WriterConnection | None,
                batch: list[Write]) -> WriterConnection | None:
        writes = [write for write in batch if write.kind != "flush"]
        if writes:
            conn, error = self._write(conn, writes)
            if error is None or _busy(error) or len(writes) == 1:
                for write in writes:
                    self._settle(write, self._error(write, error))
            else:
                # Not a lock: write each alone, so one bad write fails only itself.
                for write in writes:
                    conn, error = self._write(conn, [write])
                    self._settle(write, self._error(write, error))
        # A flush is done once everything queued before it is settled.
        for write in batch:
            if write.kind == "flush":
                self._settle(write, None)
        return conn

    def _write(self, conn: WriterConnection | None,
               batch: list[Write]) -> tuple[WriterConnection | None, sqlite3.Error | None]:
        """Apply ``batch`` in one transaction, retrying while the database is locked."""
        deadline = min(write.deadline for write in batch)
        delay = _FIRST_DELAY
        while True:
            try:
                if conn is None:
                    conn = self._connect()
                    conn.execute(f"PRAGMA busy_timeout={ATTEMPT_BUSY_MS}")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for write in batch:
                        write.apply(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    conn.forget()  # what it knew of the rolled-back writes
                    raise
                return conn, None
            except sqlite3.Error as exc:
                left = deadline - time.monotonic()
                if not _busy(exc) or left <= 0:
                    return conn, exc
                time.sleep(min(delay, left))
                delay = min(delay * 2, _MAX_DELAY)

    def _error(self, write: Write, error: sqlite3.Error | None) -> StoreError | None:
        if error is None:
            return None
        if _busy(error):
            return StoreError(
                f"the run store {self.path} stayed locked by another connection past the store "
                f"timeout ({error}); close the program holding it (a long transaction, a "
                "database browser), or raise the timeout: CELLWIRE_STORE_TIMEOUT=<seconds>, "
                "or RunStore(path, timeout=...)")
        return StoreError(
            f"the run store {self.path} refused the write ({type(error).__name__}: {error}); "
            "check that its folder is writable and the disk has room, or use another store "
            "(--db PATH, store=...)")

    def _settle(self, write: Write, error: StoreError | None) -> None:
        if write.kind in ("nodes", "checkpoint") and error is not None:
            self._lost.setdefault(write.run_id, str(error))
        elif write.kind == "end":
            lost = self._lost.pop(write.run_id, None)
            if error is None and lost is not None:
                error = StoreError(f"the run is stored without some of its node rows: {lost}")
        if write.done is not None and not write.done.done():
            if error is None:
                write.done.set_result(None)
            else:
                write.done.set_exception(error)


def _busy(error: BaseException) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.OperationalError) and code is not None and (
        code & 0xFF) in _BUSY_CODES


def _nothing(conn: sqlite3.Connection) -> None:
    return None


_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    # The writer threads are daemons; without this, runs queued at exit would be lost.
    for writer in list(_writers):
        writer.close()


__all__ = ["StoreError", "Write", "Writer"]
