"""The writes of the run store, applied by its writer thread inside one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from cellwire.engine.events import NodeFinished, NodeSkipped
from cellwire.engine.result import TRACE_COLUMNS, trace_values

from .codec import BLOB_PREFIX, BlobPacker, from_json, to_json
from .forms import write_forms
from .liveness import Owner
from .schema import NODE_JSON, conversation_of
from .writer import WriterConnection

# The JSON columns are the last ones of a trace row: a row's parameters are its plain values
# as they are, then one pack() per JSON column.
#: An event that ended a node execution: a trace row, built by the writer thread.
Ended = NodeFinished | NodeSkipped

assert tuple(TRACE_COLUMNS[-len(NODE_JSON):]) == NODE_JSON
_PLAIN_COUNT = len(TRACE_COLUMNS) - len(NODE_JSON)
_INSERT_NODE = "INSERT OR REPLACE INTO node_executions ({})".format(
    ", ".join(f'"{c}"' for c in ["seq", *TRACE_COLUMNS]))
#: Rows per multi-row INSERT (at 25 columns, well under SQLite's 32,766 parameters).
ROWS_PER_INSERT = 32
# The totals are computed from the stored rows, so a resumed run adds up across its sessions.
_FINISH_RUN = """
UPDATE runs SET
    status = ?, outputs = ?, error = ?, error_node = ?, finished_at = ?,
    answer = coalesce(answer, '') || ?,
    elapsed_ms = (? - started_at) * 1000,
    total_tokens = (SELECT coalesce(sum(total_tokens), 0) FROM node_executions WHERE run_id = ?),
    -- An unknown price (NULL) makes the run's total unknown too, never silently lower.
    total_cost = (SELECT CASE WHEN count(*) > count(cost) THEN NULL ELSE coalesce(sum(cost), 0)
                  END FROM node_executions WHERE run_id = ? AND status != 'skipped'),
    exceptions_count = (SELECT count(*) FROM node_executions
                        WHERE run_id = ? AND status = 'exception'),
    total_steps = (SELECT count(*) FROM node_executions WHERE run_id = ? AND status != 'skipped')
WHERE run_id = ?
"""


# -- what the writer's connection knows -------------------------------------------------------


def _first_seq(conn: sqlite3.Connection, table: str, run_id: str, count: int) -> int:
    """The seq of the first of ``count`` rows appended to ``run_id``'s in ``table``."""
    known = conn.next_seq if isinstance(conn, WriterConnection) else None
    first = None if known is None else known.get((table, run_id))
    if first is None:
        # Numbered after the rows already stored: a resumed run continues its own.
        first = conn.execute(f"SELECT coalesce(max(seq) + 1, 0) FROM {table} "
                             "WHERE run_id = ?", (run_id,)).fetchone()[0]
    if known is not None:
        known[(table, run_id)] = first + count
    return int(first)


def _started_afresh(conn: sqlite3.Connection, table: str, run_id: str) -> None:
    """``run_id`` has no rows in ``table`` now."""
    if isinstance(conn, WriterConnection):
        conn.next_seq[(table, run_id)] = 0


def _ended(conn: sqlite3.Connection, run_id: str) -> None:
    if isinstance(conn, WriterConnection):
        conn.started.discard(run_id)
        conn.next_seq.pop(("node_executions", run_id), None)
        conn.next_seq.pop(("checkpoint_writes", run_id), None)


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]]) -> None:
    """``head`` (``INSERT ... INTO table (columns)``) for every row: one statement per
    :data:`ROWS_PER_INSERT` rows, where ``executemany`` makes a trip per row."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start:start + ROWS_PER_INSERT]
        conn.execute(f"{head} VALUES {', '.join([one] * len(part))}",
                     [value for row in part for value in row])


# -- the writes, applied by the writer thread inside its transaction ------------------------------


def write_start(conn: sqlite3.Connection, run_id: str, workflow: str, inputs: Any,
                started_at: float, resume: bool, owner: Owner) -> None:
    """Record a run as ``running`` by ``owner`` (a resumed run keeps its rows)."""
    who = (owner.host, owner.boot, owner.pid, owner.start, started_at)
    if isinstance(conn, WriterConnection):
        conn.started.add(run_id)
    if resume and conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
        conn.execute("UPDATE runs SET status = 'running', finished_at = NULL, error = NULL, "
                     "error_node = NULL, owner_host = ?, owner_boot = ?, owner_pid = ?, "
                     "owner_start = ?, heartbeat_at = ? WHERE run_id = ?", (*who, run_id))
        return
    packer = BlobPacker()
    conn.execute(
        "INSERT OR REPLACE INTO runs (run_id, workflow, status, inputs, started_at, "
        "conversation_id, owner_host, owner_boot, owner_pid, owner_start, heartbeat_at) "
        "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, workflow, packer.pack(inputs), started_at, conversation_of(inputs), *who),
    )
    # A run id used again replaces the old run rather than mixing with it.
    conn.execute("DELETE FROM node_executions WHERE run_id = ?", (run_id,))
    _started_afresh(conn, "node_executions", run_id)
    _put_blobs(conn, packer)


def write_nodes(conn: sqlite3.Connection, run_id: str, rows: Sequence[Ended]) -> None:
    """Append the trace rows of ``rows`` (events that ended node executions) after the run's
    stored ones."""
    _put_blobs(conn, _insert_nodes(conn, run_id, rows))


def write_end(conn: sqlite3.Connection, run_id: str, status: str, *, finished_at: float,
              outputs: Any, error: str | None, error_node: str | None, answer: str,
              rows: Sequence[Ended], started_at: float, workflow: str,
              inputs: Any, conversation: dict[str, Any] | None = None,
              forms: Sequence[dict[str, Any]] = ()) -> None:
    """Write the run's remaining rows and its end state, the conversation variables it
    assigned (``conversation``: name -> value) over those its conversation had, and the
    forms it paused with (``forms``: :meth:`Form.to_dict` dicts)."""
    packer = BlobPacker()
    # The run's start may not be stored (a lock outlasted it, or the sink joined mid-run):
    # make the row the start would have made.
    if not (isinstance(conn, WriterConnection) and run_id in conn.started):
        conn.execute(
            "INSERT OR IGNORE INTO runs (run_id, workflow, status, inputs, started_at, "
            "conversation_id) VALUES (?, ?, 'running', ?, ?, ?)",
            (run_id, workflow, packer.pack(inputs), started_at, conversation_of(inputs)),
        )
    _insert_nodes(conn, run_id, rows, packer)
    _ended(conn, run_id)
    conn.execute(
        _FINISH_RUN,
        (status, packer.pack(outputs), error, error_node, finished_at, answer,
         finished_at, run_id, run_id, run_id, run_id, run_id),
    )
    conversation_id = conversation_of(inputs)
    if conversation and conversation_id is not None:
        _save_conversation(conn, packer, workflow, conversation_id, conversation, run_id,
                           finished_at)
    if forms:
        write_forms(conn, run_id, forms)
    _put_blobs(conn, packer)


def _save_conversation(conn: sqlite3.Connection, packer: BlobPacker, workflow: str,
                       conversation_id: str, assigned: dict[str, Any], run_id: str,
                       at: float) -> None:
    row = conn.execute("SELECT variables FROM conversations WHERE workflow = ? AND "
                       "conversation_id = ?", (workflow, conversation_id)).fetchone()
    try:
        variables = read_value(conn, row[0]) if row is not None else {}
    except KeyError:  # its blob is lost: what this turn assigned is all there is
        variables = {}
    if not isinstance(variables, dict):
        variables = {}
    variables.update(assigned)
    conn.execute("INSERT OR REPLACE INTO conversations (workflow, conversation_id, variables, "
                 "last_run_id, updated_at) VALUES (?, ?, ?, ?, ?)",
                 (workflow, conversation_id, packer.pack(variables), run_id, at))


def read_value(conn: sqlite3.Connection, text: str | None) -> Any:
    """The value a JSON column holds, its blob read when it lives in ``blobs``."""
    blobs = None
    if text is not None and text.startswith(BLOB_PREFIX):
        found = conn.execute("SELECT data FROM blobs WHERE hash = ?", (text[1:],)).fetchone()
        blobs = {text[1:]: found[0]} if found is not None else {}
    return from_json(text, blobs)


def _insert_nodes(conn: sqlite3.Connection, run_id: str,
                  rows: Sequence[Ended],
                  packer: BlobPacker | None = None) -> BlobPacker:
    packer = packer or BlobPacker()
    if rows:
        first = _first_seq(conn, "node_executions", run_id, len(rows))
        pack = packer.pack
        params = []
        for seq, event in enumerate(rows, first):
            values = trace_values(event)
            params.append((seq, *values[:_PLAIN_COUNT],
                           *[pack(v) for v in values[_PLAIN_COUNT:]]))
        insert_rows(conn, _INSERT_NODE, params)
    return packer


def _put_blobs(conn: sqlite3.Connection, packer: BlobPacker) -> None:
    if packer.pending:
        conn.executemany(
            "INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?, ?, ?)",
            [(h, len(t), t) for h, t in packer.pending.items()],
        )



# -- checkpoints (store/checkpoints.py) ------------------------------------------------------------

_INSERT_WRITES = ("INSERT INTO checkpoint_writes (run_id, seq, node_id, status, handle, "
                  "steps, outputs, conversation)")


def write_begin(conn: sqlite3.Connection, run_id: str, *, version: str, workflow: str,
                definition: str, created_at: float, durability: str, sealed: str | None,
                state: str | None, process: tuple[int, str, str | None],
                resumed_answer: str | None) -> None:
    """Record the run's version and, unless it keeps no checkpoints (``state`` None), what a
    resume needs. A resumed run (``resumed_answer`` given) keeps its checkpoint and writes."""
    stored = conn.versions if isinstance(conn, WriterConnection) else set()
    if version not in stored:
        conn.execute("INSERT OR IGNORE INTO versions (hash, workflow, definition, created_at) "
                     "VALUES (?, ?, ?, ?)", (version, workflow, definition, created_at))
        stored.add(version)
    conn.execute("UPDATE runs SET version = ? WHERE run_id = ?", (version, run_id))
    if resumed_answer is not None:
        # What the answer nodes it restored said; this session's chunks are appended at its end.
        conn.execute("UPDATE runs SET answer = ? WHERE run_id = ?", (resumed_answer, run_id))
        conn.execute("UPDATE checkpoints SET durability = ?, pid = ?, host = ?, "
                     "process_start = ? WHERE run_id = ?", (durability, *process, run_id))
        return
    # A run id used again starts afresh.
    conn.execute("DELETE FROM checkpoint_writes WHERE run_id = ?", (run_id,))
    _started_afresh(conn, "checkpoint_writes", run_id)
    if state is None:
        conn.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
        return
    conn.execute(
        "INSERT OR REPLACE INTO checkpoints (run_id, version, durability, sealed, state, pid, "
        "host, process_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (run_id, version, durability, sealed, state, *process))


class NodeWrites:
    """Checkpoint writes of one run's finished nodes, with the trace rows the run produced
    since the previous ones, applied as one write by the writer thread.

    A run keeps adding to its last one while the writer has not taken it yet (see
    :meth:`~cellwire.store.writer.Writer.add_to_last`): a node costs the event loop a tuple,
    and the writer a row in one multi-row INSERT. ``seal`` (runs granted secrets) encrypts
    each node's outputs, as ``seal(text, where)``; otherwise a large value lives once in
    ``blobs``, shared with the trace row that shows the same value."""

    __slots__ = ("nodes", "rows", "run_id", "seal")

    def __init__(self, run_id: str, seal: Callable[[str, str], str] | None) -> None:
        self.run_id = run_id
        self.seal = seal
        #: (node_id, status, handle, steps, outputs, conversation JSON or None)
        self.nodes: list[tuple[str, str, str | None, int, Any, str | None]] = []
        self.rows: list[Ended] = []

    def add(self, node: tuple[str, str, str | None, int, Any, str | None],
            rows: list[Ended]) -> None:
        self.nodes.append(node)
        if rows:
            self.rows += rows

    def __call__(self, conn: sqlite3.Connection) -> None:
        run_id, seal = self.run_id, self.seal
        packer = _insert_nodes(conn, run_id, self.rows)
        first = _first_seq(conn, "checkpoint_writes", run_id, len(self.nodes))
        pack = packer.pack
        insert_rows(conn, _INSERT_WRITES, [
            (run_id, seq, node_id, status, handle, steps,
             pack(outputs) if seal is None else seal(to_json(outputs) or "null",
                                                     f"{run_id}/{node_id}"),
             conversation)
            for seq, (node_id, status, handle, steps, outputs, conversation)
            in enumerate(self.nodes, first)])
        _put_blobs(conn, packer)
