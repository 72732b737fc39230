"""Batches and evaluations in the run store.

A batch is a row in ``batches``; each of its rows that started is a row in ``batch_rows``
naming the run it ran as (the last one, after a retry). The runs themselves are ordinary runs:
a batch row is finished when its run is, so resuming a batch reads the finished rows' results
from ``runs`` and runs only the others. A row's run id is queued on the store's writer before
the run starts, so it is committed no later than the run's own end.

Evaluations keep their summary and their per-row frame (as JSON records) to compare later.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .codec import BlobPacker, from_json, to_json
from .writer import Write

if TYPE_CHECKING:
    from .sqlite import RunStore

#: Run states a batch row is not finished in: it runs again when its batch resumes (a
#: stopped row was cut short by an interrupt: Ctrl-C, a cancelled batch).
UNFINISHED = ("running", "pending", "stopped")


class BatchMismatch(ValueError):
    """A batch id was given with inputs that are not the batch's."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A stored batch: what it ran, over how many rows, and a hash of its inputs."""

    batch_id: str
    workflow: str
    created_at: float
    total: int
    inputs_hash: str


@dataclass(frozen=True, slots=True)
class FinishedRow:
    """What the store holds of a finished batch row's run."""

    run_id: str
    status: str
    error: str | None
    error_node: str | None
    elapsed_ms: float | None
    total_tokens: int
    total_cost: float | None
    outputs: dict[str, Any]
    answer: str


def _wait(store: RunStore, apply: Any, what: str) -> None:
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    store.writer.submit(Write(what, apply, time.monotonic() + store.timeout, "start", done))
    done.result()


def begin_batch(store: RunStore, batch: Batch) -> None:
    """Record a new batch (committed when this returns)."""

    def apply(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO batches (batch_id, workflow, created_at, total, inputs_hash) "
                     "VALUES (?, ?, ?, ?, ?)", (batch.batch_id, batch.workflow,
                                                batch.created_at, batch.total,
                                                batch.inputs_hash))

    _wait(store, apply, f"batch {batch.batch_id}")


def find_batch(store: RunStore, batch_id: str) -> Batch | None:
    """The batch ``batch_id``, or None when the store has none by that id."""
    with store._lock:
        row = store._conn.execute(
            "SELECT batch_id, workflow, created_at, total, inputs_hash FROM batches "
            "WHERE batch_id = ?", (batch_id,)).fetchone()
    return None if row is None else Batch(*row)


def record_row(store: RunStore, batch_id: str, position: int, run_id: str) -> None:
    """Queue: row ``position`` of the batch runs as ``run_id`` (replacing an earlier run)."""

    def apply(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO batch_rows (batch_id, position, run_id) "
                     "VALUES (?, ?, ?)", (batch_id, position, run_id))

    store.writer.submit(Write(run_id, apply, time.monotonic() + store.timeout, "start"))


def finished_rows(store: RunStore, batch_id: str) -> dict[int, FinishedRow]:
    """The batch's rows whose runs ended (succeeded, partially, failed or paused), by
    position; rows that never started or whose run was cut short are not among them."""
    with store._lock:
        rows = store._conn.execute(
            "SELECT b.position, r.run_id, r.status, r.error, r.error_node, r.elapsed_ms, "
            "r.total_tokens, r.total_cost, r.outputs, r.answer FROM batch_rows b "
            "JOIN runs r ON r.run_id = b.run_id WHERE b.batch_id = ? AND r.status NOT IN "
            f"({', '.join('?' * len(UNFINISHED))})", (batch_id, *UNFINISHED)).fetchall()
        blobs = store._blobs([row[8] for row in rows])
    found = {}
    for position, run_id, status, error, node, elapsed, tokens, cost, outputs, answer in rows:
        value = from_json(outputs, blobs)
        found[position] = FinishedRow(run_id, status, error, node, elapsed, tokens or 0, cost,
                                      value if isinstance(value, dict) else {}, answer or "")
    return found


def batch_run_ids(store: RunStore, batch_id: str) -> dict[int, str]:
    """Each started row's (last) run id, by position."""
    with store._lock:
        return dict(store._conn.execute(
            "SELECT position, run_id FROM batch_rows WHERE batch_id = ?", (batch_id,)))


# -- evaluations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredEvaluation:
    eval_id: str
    name: str | None
    created_at: float
    workflows: list[str]
    summary: list[dict[str, Any]]
    rows: list[dict[str, Any]]


def save_evaluation(store: RunStore, found: StoredEvaluation) -> None:
    """Store an evaluation (committed when this returns)."""
    packer = BlobPacker()
    rows = packer.pack(found.rows) or "[]"
    summary = packer.pack(found.summary) or "[]"

    def apply(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?, ?, ?)",
                         [(h, len(t), t) for h, t in packer.pending.items()])
        conn.execute("INSERT OR REPLACE INTO evaluations (eval_id, name, created_at, workflows, "
                     "summary, rows) VALUES (?, ?, ?, ?, ?, ?)",
                     (found.eval_id, found.name, found.created_at,
                      to_json(found.workflows), summary, rows))

    _wait(store, apply, f"evaluation {found.eval_id}")


def load_evaluation(store: RunStore, eval_id: str) -> StoredEvaluation:
    """The evaluation ``eval_id`` (a unique prefix is enough); KeyError names the known ones."""
    with store._lock:
        rows = store._conn.execute(
            "SELECT eval_id, name, created_at, workflows, summary, rows FROM evaluations "
            "WHERE eval_id >= ? AND eval_id < ? LIMIT 2",
            (eval_id, eval_id + "\U0010ffff")).fetchall() if eval_id else []
        exact = [r for r in rows if r[0] == eval_id]
        rows = exact or rows
        if len(rows) != 1:
            known = [r[0] for r in store._conn.execute(
                "SELECT eval_id FROM evaluations ORDER BY created_at DESC LIMIT 5")]
            why = "is ambiguous; give more characters" if rows else "is not stored"
            raise KeyError(f"evaluation {eval_id!r} {why} (store: {store.path}; latest: "
                           f"{', '.join(known) or 'none'})")
        row = rows[0]
        blobs = store._blobs([row[4], row[5]])
    return StoredEvaluation(row[0], row[1], row[2], from_json(row[3]),
                            from_json(row[4], blobs), from_json(row[5], blobs))


def list_evaluations(store: RunStore) -> list[tuple[str, str | None, float, list[str]]]:
    """``(eval_id, name, created_at, workflows)`` of every stored evaluation, newest first."""
    with store._lock:
        rows = store._conn.execute(
            "SELECT eval_id, name, created_at, workflows FROM evaluations "
            "ORDER BY created_at DESC").fetchall()
    return [(r[0], r[1], r[2], from_json(r[3])) for r in rows]


__all__ = ["Batch", "BatchMismatch", "FinishedRow", "StoredEvaluation", "batch_run_ids",
           "begin_batch", "find_batch", "finished_rows", "list_evaluations", "load_evaluation",
           "record_row", "save_evaluation"]
