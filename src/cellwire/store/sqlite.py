"""The run store: one SQLite file (WAL, ``synchronous=NORMAL``) of runs and node executions.

Writes go through one writer thread per store (:mod:`cellwire.store.writer`), never the event
loop: a run's hooks only queue, and its end waits until its rows are committed. Reads use the
store's own connection under its lock, so one store may be shared by the event loop thread and
the helper thread :func:`cellwire.run` uses in a notebook; other processes open their own
store on the same file (WAL lets them read while one writes).

A database another process holds locked is waited for, off the loop, up to the store timeout:
``RunStore(path, timeout=...)``, else ``$CELLWIRE_STORE_TIMEOUT`` (seconds), else
:data:`DEFAULT_STORE_TIMEOUT`. A run whose rows could not be written in that time says so in
its result (``stored=False``, ``store_error``) and ``cellwire run`` exits 3.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from cellwire.engine.forms import Form
from cellwire.engine.result import TRACE_COLUMNS
from cellwire.engine.services import Turn

from . import views
from .checkpoints import StoreCheckpointer
from .codec import blob_refs, from_json, to_json
from .forms import StoredForm, answer_form, read_forms
from .home import private_dir, private_file
from .liveness import status_of
from .retention import Duration, PruneReport, prune
from .schema import NODE_JSON, OWNER_COLUMNS, RUN_COLUMNS, RUN_JSON, migrate
from .sink import StoreSink
from .writer import Writer, WriterConnection

if TYPE_CHECKING:
    import pandas as pd

BUSY_TIMEOUT_MS = 5000
#: Seconds a run's writes wait for a database another process holds locked.
DEFAULT_STORE_TIMEOUT = 300.0
STORE_TIMEOUT_ENV = "CELLWIRE_STORE_TIMEOUT"

_SELECT_TRACE = "SELECT {} FROM node_executions WHERE run_id = ? ORDER BY seq".format(
    ", ".join(f'"{c}"' for c in TRACE_COLUMNS)
)
# The owner's columns follow the run's: they decide whether a `running` row is interrupted.
_SELECT_RUNS = "SELECT {} FROM runs".format(", ".join([*RUN_COLUMNS, *OWNER_COLUMNS]))
_STATUS_AT = RUN_COLUMNS.index("status")
_STARTED_AT = RUN_COLUMNS.index("started_at")

#: Run states whose turn counts in a conversation's history.
_FINISHED = ("succeeded", "partial-succeeded")


class RunNotFound(KeyError):
    """No stored run has that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "run not found"


class RunStore:
    """Runs and their node executions in ``path``; DataFrame views over them.

    ``store.sink`` is the layer that fills it: subscribe it to a :class:`Runtime`, or let
    :func:`cellwire.api.arun` do it (``store=`` option). ``timeout`` is how many seconds a
    run's writes wait for a database another process holds locked (see the module's text).
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float | None = None):
        self.path = Path(path).expanduser().resolve()
        self.timeout = store_timeout() if timeout is None else float(timeout)
        # Private before SQLite opens it: its -wal and -shm files take the database's mode.
        private_dir(self.path.parent)
        private_file(self.path)
        self._lock = threading.RLock()
        # Autocommit mode: transactions are explicit, so a run's rows commit together.
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _enter_wal(self._conn, self.timeout)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        migrate(self._conn)
        self.writer = Writer(str(self.path), self._connect_writer)
        self.sink = StoreSink(self)
        #: Where runs on this store commit their checkpoints (``Runtime.checkpointer``).
        self.checkpoints = StoreCheckpointer(self)

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    def close(self) -> None:
        """Write what is queued (waiting up to the store timeout for a locked database), then
        close; :func:`open_store` then opens a fresh store for this path."""
        with _open_lock:
            if _open.get((os.getpid(), self.path)) is self:
                del _open[(os.getpid(), self.path)]
        self.writer.close()
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pragma(self, name: str) -> Any:
        """The value of ``PRAGMA name`` on this store's connection."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        with self._lock:
            return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    # -- writing (on the writer thread) ----------------------------------------------------

    def _connect_writer(self) -> WriterConnection:
        conn = sqlite3.connect(self.path, isolation_level=None, factory=WriterConnection)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every write queued so far is committed (or given up); False when
        ``timeout`` seconds passed first. Runs need not call it: their end waits for them."""
        return self.writer.flush(timeout)

    # -- reading ----------------------------------------------------------------------------

    def runs(self, limit: int | None = None, workflow: str | None = None,
             status: str | None = None) -> pd.DataFrame:
        """Stored runs, newest first, optionally filtered by workflow name and status.

        A ``running`` run whose process is gone shows as ``interrupted``
        (:mod:`cellwire.store.liveness` says how that is decided)."""
        where: list[str] = []
        params: list[str | int] = []
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        # Whether a running row is interrupted is decided per row, after the query.
        live_filter = str(status) if str(status) in ("running", "interrupted") else None
        if live_filter is not None:
            where.append("status = 'running'")
        elif status is not None:
            where.append("status = ?")
            params.append(str(status))
        sql = _SELECT_RUNS
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, rowid DESC"
        if limit is not None and live_filter is None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._lock:
            found = [_shown(row) for row in self._conn.execute(sql, params)]
            if live_filter is not None:
                found = [row for row in found if row[_STATUS_AT] == live_filter][:limit]
            blobs = self._blobs(_json_cells(found, RUN_COLUMNS, RUN_JSON))
        return views.runs_frame(found, blobs)

    def resolve(self, run_id: str) -> str:
        """The full id of the run whose id is ``run_id`` or starts with it."""
        with self._lock:
            if self._conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                return run_id
            found = self._conn.execute(
                "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
                (run_id, run_id + "\U0010ffff"),
            ).fetchall() if run_id else []
        if len(found) == 1:
            return found[0][0]
        if not found:
            raise RunNotFound(f"no stored run has id {run_id!r} (store: {self.path})")
        raise RunNotFound(f"run id prefix {run_id!r} is ambiguous; give more characters")

    def run(self, run_id: str) -> dict[str, Any]:
        """One run as a dict (a unique prefix of its id is enough); times are UTC datetimes.
        A ``running`` run whose process is gone shows as ``interrupted``."""
        full = self.resolve(run_id)
        with self._lock:
            row = _shown(self._conn.execute(_SELECT_RUNS + " WHERE run_id = ?",
                                            (full,)).fetchone())
            blobs = self._blobs(_json_cells([row], RUN_COLUMNS, RUN_JSON))
        return views.run_dict(row, blobs)

    def version(self, run_id: str) -> tuple[str, str]:
        """``(hash, native YAML)`` of the workflow version run ``run_id`` ran (a unique prefix
        of its id is enough); raises :class:`RunNotFound` for a run that recorded none."""
        full = self.resolve(run_id)
        with self._lock:
            row = self._conn.execute(
                "SELECT v.hash, v.definition FROM runs r JOIN versions v ON v.hash = r.version "
                "WHERE r.run_id = ?", (full,)).fetchone()
        if row is None:
            raise RunNotFound(f"run {full} recorded no workflow version (runs stored before "
                              "versions existed, or of a workflow YAML cannot hold)")
        return row[0], row[1]

    def trace(self, run_id: str) -> pd.DataFrame:
        """The run's node executions: the same columns as :attr:`RunResult.trace`."""
        full = self.resolve(run_id)
        with self._lock:
            rows = self._conn.execute(_SELECT_TRACE, (full,)).fetchall()
            blobs = self._blobs(_json_cells(rows, TRACE_COLUMNS, NODE_JSON))
        return views.trace_frame_from_rows(rows, blobs)

    def conversation_turns(self, workflow: str, conversation_id: str, limit: int, *,
                           node_id: str | None = None,
                           exclude_run: str | None = None) -> list[Turn]:
        """The last ``limit`` finished runs of ``workflow`` in conversation
        ``conversation_id``, oldest first, as turns: the run's ``sys.query`` and its answer.

        The answer is what the run's answer nodes streamed; for a run without one, the
        ``text`` output of node ``node_id`` (the llm node asking for its memory).
        ``exclude_run`` leaves out a run (the one asking)."""
        if limit <= 0 or conversation_id is None or conversation_id == "":
            return []
        with self._lock:
            rows = self._conn.execute(
                "SELECT run_id, inputs, answer FROM runs WHERE workflow = ? "
                "AND conversation_id = ? AND status IN (?, ?) AND run_id != ? "
                "ORDER BY started_at DESC, rowid DESC LIMIT ?",
                (workflow, str(conversation_id), *_FINISHED, exclude_run or "", int(limit)),
            ).fetchall()
            missing = [r[0] for r in rows if not r[2]]
            replies: dict[str, Any] = {}
            if node_id is not None and missing:
                found = self._conn.execute(
                    "SELECT run_id, outputs FROM node_executions WHERE node_id = ? "
                    "AND status = 'succeeded' AND run_id IN ({}) ORDER BY seq".format(
                        ",".join("?" * len(missing))), (node_id, *missing)).fetchall()
                # The last execution of the node in a run (iterations run it many times).
                replies = dict(found)
            blobs = self._blobs([r[1] for r in rows] + list(replies.values()))
        turns = []
        for run_id, inputs, answer in reversed(rows):
            query = (from_json(inputs, blobs) or {}).get("sys.query")
            if not answer and run_id in replies:
                outputs = from_json(replies[run_id], blobs)
                answer = outputs.get("text") if isinstance(outputs, dict) else None
            turns.append(Turn(run_id, _text(query), _text(answer)))
        return turns

    def conversation_variables(self, workflow: str, conversation_id: str) -> dict[str, Any]:
        """The conversation variables that the last turn of conversation ``conversation_id``
        of ``workflow`` left, by name: only those some turn assigned ({} for none)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT variables FROM conversations WHERE workflow = ? AND conversation_id = ?",
                (workflow, str(conversation_id))).fetchone()
            if row is None:
                return {}
            value = from_json(row[0], self._blobs([row[0]]))
        return value if isinstance(value, dict) else {}

    # -- human input -----------------------------------------------------------------------

    def forms(self, run_id: str | None = None, *, waiting: bool = True) -> list[Form]:
        """The forms of run ``run_id`` (a unique prefix is enough; None: of every run),
        oldest first; only those still waiting for an answer unless ``waiting=False``."""
        full = None if run_id is None else self.resolve(run_id)
        with self._lock:
            return [s.form for s, _ in read_forms(self._conn, full, waiting=waiting)]

    def form(self, token: str) -> StoredForm:
        """The form whose token is ``token``; KeyError when there is none."""
        with self._lock:
            found = read_forms(self._conn, token=token)
        if not found:
            raise KeyError("no form has this token")
        return found[0][0]

    def record_answer(self, run_id: str, node_id: str, action: str, values_text: str,
                      answered_at: float) -> bool:
        """Record the answer to a waiting form (values as JSON text, sealed by the caller for
        runs granted secrets); False when the form was not waiting."""
        with self._lock:
            return answer_form(self._conn, run_id, node_id, action, values_text, answered_at)

    # -- retention -------------------------------------------------------------------------

    def prune(self, *, older_than: Duration | None = None, keep: int | None = None,
              workflow: str | None = None, dry_run: bool = False) -> PruneReport:
        """Delete old runs, then shrink the file; :func:`cellwire.store.retention.prune`
        says what goes and what stays."""
        self.flush(self.timeout)
        return prune(self.path, older_than=older_than, keep=keep, workflow=workflow,
                     dry_run=dry_run, timeout=self.timeout)

    def _blobs(self, cells: list[str | None]) -> dict[str, str]:
        refs = blob_refs(cells)
        if not refs:
            return {}
        found: dict[str, str] = {}
        refs_list = sorted(refs)
        for i in range(0, len(refs_list), 500):
            chunk = refs_list[i:i + 500]
            found.update(self._conn.execute(
                "SELECT hash, data FROM blobs WHERE hash IN ({})".format(",".join("?" * len(chunk))),
                chunk,
            ).fetchall())
        return found


def _shown(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row of ``_SELECT_RUNS`` as ``RUN_COLUMNS``, its status as a reader should see it."""
    values = list(row[:len(RUN_COLUMNS)])
    host, boot, pid, start, beat = row[len(RUN_COLUMNS):]
    values[_STATUS_AT] = status_of(values[_STATUS_AT], host, boot, pid, start, beat,
                                   values[_STARTED_AT])
    return tuple(values)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else to_json(value) or ""


def _json_cells(rows: list[tuple[Any, ...]], columns: list[str],
                json_columns: Sequence[str]) -> list[str | None]:
    at = [columns.index(c) for c in json_columns]
    return [row[i] for row in rows for i in at]


def store_timeout() -> float:
    """The store timeout from ``$CELLWIRE_STORE_TIMEOUT``, else the default."""
    raw = os.environ.get(STORE_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_STORE_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{STORE_TIMEOUT_ENV}={raw!r} is not a number of seconds; set it to "
                         f"e.g. {DEFAULT_STORE_TIMEOUT:g}, or unset it")
    return value


_open: dict[tuple[int, Path], RunStore] = {}
_open_lock = threading.Lock()


def _enter_wal(conn: sqlite3.Connection, timeout: float) -> None:
    # Switching a new database to WAL takes an exclusive lock, and SQLite answers "database
    # is locked" at once, without its busy handler, when processes open the same new file
    # together (Dask workers): retry with backoff until the store's timeout.
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def is_open(store: RunStore) -> bool:
    """Whether ``store`` is the process's open store for its path (not closed since)."""
    return _open.get((os.getpid(), store.path)) is store


def open_store(path: str | os.PathLike[str]) -> RunStore:
    """The process's store for ``path``: one connection per process per file."""
    key = (os.getpid(), Path(path).expanduser().resolve())
    with _open_lock:
        store = _open.get(key)
        if store is None:
            store = _open[key] = RunStore(key[1])
        return store


__all__ = ["DEFAULT_STORE_TIMEOUT", "RunNotFound", "RunStore", "is_open", "open_store",
           "store_timeout"]
