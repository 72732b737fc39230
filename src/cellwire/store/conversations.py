"""Chat conversations as a served app lists them: a conversation is the runs of one workflow
that share a ``sys.conversation_id``; its name and deletion live in ``conversation_names``.

Each method opens a short connection of its own (WAL lets it read beside the store's writer,
and several server processes share the file): nothing here holds the store's lock.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .codec import from_json
from .sqlite import BUSY_TIMEOUT_MS


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation: its id, name, first-turn inputs and times (Unix seconds)."""

    id: str
    name: str
    inputs: dict[str, Any]
    user: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Message:
    """One turn: the run, what was asked, what was answered."""

    id: str
    conversation_id: str
    inputs: dict[str, Any]
    query: str
    answer: str
    status: str
    created_at: float


class Conversations:
    """The conversations of the runs in the store at ``path``."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def listed(self, workflow: str, *, user: str | None = None, limit: int = 20,
             last_id: str | None = None) -> tuple[list[Conversation], bool]:
        """Conversations of ``workflow``, newest activity first, after ``last_id``; and
        whether there are more."""
        sql = """
            SELECT r.conversation_id, MIN(r.started_at), MAX(r.started_at), n.name
            FROM runs r LEFT JOIN conversation_names n
              ON n.workflow = r.workflow AND n.conversation_id = r.conversation_id
            WHERE r.workflow = ? AND r.conversation_id IS NOT NULL AND n.deleted_at IS NULL
            GROUP BY r.conversation_id ORDER BY MAX(r.started_at) DESC"""
        with self._conn() as conn:
            rows = conn.execute(sql, (workflow,)).fetchall()
            found = [self._one(conn, workflow, row) for row in rows]
        if user is not None:
            found = [c for c in found if c.user == user]
        if last_id:
            ids = [c.id for c in found]
            found = found[ids.index(last_id) + 1:] if last_id in ids else []
        return found[:limit], len(found) > limit

    def _one(self, conn: sqlite3.Connection, workflow: str, row: tuple[Any, ...]) -> Conversation:
        conversation_id, first, last, name = row
        first_run = conn.execute(
            "SELECT inputs FROM runs WHERE workflow = ? AND conversation_id = ? "
            "ORDER BY started_at LIMIT 1", (workflow, conversation_id)).fetchone()
        inputs = _decoded(conn, first_run[0] if first_run else None)
        query = str(inputs.get("sys.query") or "")
        return Conversation(conversation_id, name or query[:40] or "New conversation",
                            {k: v for k, v in inputs.items() if not k.startswith("sys.")},
                            str(inputs.get("sys.user_id") or ""), first, last)

    def get(self, workflow: str, conversation_id: str) -> Conversation | None:
        """The conversation, or None when it has no turn or was deleted."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT r.conversation_id, MIN(r.started_at), MAX(r.started_at), n.name "
                "FROM runs r LEFT JOIN conversation_names n ON n.workflow = r.workflow AND "
                "n.conversation_id = r.conversation_id WHERE r.workflow = ? AND "
                "r.conversation_id = ? AND n.deleted_at IS NULL GROUP BY r.conversation_id",
                (workflow, conversation_id)).fetchone()
            return None if row is None else self._one(conn, workflow, row)

    def rename(self, workflow: str, conversation_id: str, name: str) -> None:
        now = time.time()
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO conversation_names (workflow, conversation_id, name, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (workflow, conversation_id) "
                "DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
                (workflow, conversation_id, name, now, now))

    def delete(self, workflow: str, conversation_id: str) -> None:
        """Hide the conversation from listings (its runs stay, as Dify's soft delete)."""
        now = time.time()
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO conversation_names (workflow, conversation_id, created_at, "
                "updated_at, deleted_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (workflow, "
                "conversation_id) DO UPDATE SET deleted_at = excluded.deleted_at",
                (workflow, conversation_id, now, now, now))

    def messages(self, workflow: str, conversation_id: str) -> list[Message]:
        """The turns of a conversation, oldest first."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT run_id, inputs, answer, status, started_at FROM runs WHERE "
                "workflow = ? AND conversation_id = ? ORDER BY started_at, rowid",
                (workflow, conversation_id)).fetchall()
            out = []
            for run_id, inputs_text, answer, status, started in rows:
                inputs = _decoded(conn, inputs_text)
                out.append(Message(run_id, conversation_id,
                                   {k: v for k, v in inputs.items() if not k.startswith("sys.")},
                                   str(inputs.get("sys.query") or ""), answer or "", status,
                                   started))
        return out


def _decoded(conn: sqlite3.Connection, text: str | None) -> dict[str, Any]:
    blobs: dict[str, str] = {}
    if text and text.startswith("@"):
        row = conn.execute("SELECT data FROM blobs WHERE hash = ?", (text[1:],)).fetchone()
        if row is None:
            return {}
        blobs[text[1:]] = row[0]
    value = from_json(text, blobs)
    return value if isinstance(value, dict) else {}


__all__ = ["Conversation", "Conversations", "Message"]
