"""The forms paused runs wait on, in the run store: written when a run pauses, answered from
any process (the kernel, the command line, a server), read back when the run resumes.

A run that pauses again at a node keeps the form it first showed there: its token, and its
deadline, which a resume does not push back.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cellwire.engine.forms import Answer, Form


@dataclass(frozen=True, slots=True)
class StoredForm:
    """A form as the store keeps it: the form, whether it was answered, and how."""

    form: Form
    status: str
    answer: Answer | None = None


def write_forms(conn: sqlite3.Connection, run_id: str, forms: Sequence[dict[str, Any]]) -> None:
    """Record the forms run ``run_id`` paused with (on the writer thread, in its end's
    transaction); a form already recorded for a node is kept as it is."""
    conn.executemany(
        "INSERT OR IGNORE INTO forms (run_id, node_id, token, form, created_at, expires_at, "
        "status) VALUES (?, ?, ?, ?, ?, ?, 'waiting')",
        [(run_id, f["node_id"], f["token"], json.dumps(f, ensure_ascii=False),
          f.get("created_at") or 0.0, f.get("expires_at")) for f in forms])


def read_forms(conn: sqlite3.Connection, run_id: str | None = None, *,
               token: str | None = None, waiting: bool = False) -> list[tuple[StoredForm, str | None]]:
    """The forms of run ``run_id`` (of every run when None), or the one with ``token``, each
    with its answer's stored text (sealed for runs granted secrets: the caller opens it)."""
    sql = "SELECT form, status, action, answer, answered_at FROM forms WHERE 1 = 1"
    params: list[Any] = []
    if run_id is not None:
        sql += " AND run_id = ?"
        params.append(run_id)
    if token is not None:
        sql += " AND token = ?"
        params.append(token)
    if waiting:
        sql += " AND status = 'waiting'"
    found = []
    for form_text, status, action, answer_text, answered_at in conn.execute(
            sql + " ORDER BY created_at", params):
        form = Form.from_dict(json.loads(form_text))
        answer = None
        if action is not None:
            answer = Answer(action, {}, answered_at or 0.0)
        found.append((StoredForm(form, status, answer), answer_text))
    return found


def answer_form(conn: sqlite3.Connection, run_id: str, node_id: str, action: str,
                values_text: str, answered_at: float) -> bool:
    """Record the answer to a waiting form; False when it was not waiting (already answered,
    or never asked)."""
    done = conn.execute(
        "UPDATE forms SET status = 'answered', action = ?, answer = ?, answered_at = ? "
        "WHERE run_id = ? AND node_id = ? AND status = 'waiting'",
        (action, values_text, answered_at, run_id, node_id))
    return done.rowcount == 1


__all__ = ["StoredForm", "answer_form", "read_forms", "write_forms"]
