"""API keys of ``cellwire serve`` in the run store: created, looked up, listed, revoked.

A key is ``app-`` followed by 32 random bytes (URL-safe base64), shown once when it is created
and never stored: the store keeps its SHA-256 hex digest. A plain hash, not a slow password hash
(bcrypt, scrypt, argon2), is the right tool here: a slow hash protects guessable secrets chosen
by people, while these keys carry 256 bits of randomness no dictionary or brute force can cover,
so a fast hash is as safe, and it lets every request find its key with one indexed lookup.

Roles are stored as text (``viewer``, ``runner``, ``admin``); what they permit is decided by the
server (:mod:`cellwire.serve.principal`), which is above the store.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .writer import Write

if TYPE_CHECKING:
    from .sqlite import RunStore

#: What every key starts with (Dify's app keys look the same), so a key in a log is recognised.
KEY_PREFIX = "app-"
#: The roles a key may have, lowest first.
ROLES = ("viewer", "runner", "admin")

_COLUMNS = "key_id, role, app, name, created_at, last_used_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: everything but the key itself (which is never stored) and its hash."""

    key_id: str
    role: str
    app: str | None  # None: every app the server serves
    name: str | None
    created_at: float
    last_used_at: float | None
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        """True once the key was revoked: it no longer authenticates anything."""
        return self.revoked_at is not None


def key_hash(key: str) -> str:
    """The hex SHA-256 digest the store keeps in place of ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _wait(store: RunStore, apply: Callable[[sqlite3.Connection], None], what: str) -> None:
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    store.writer.submit(Write(what, apply, time.monotonic() + store.timeout, "start", done))
    done.result()


def create_key(store: RunStore, role: str, *, app: str | None = None,
               name: str | None = None) -> tuple[ApiKey, str]:
    """Create a key with ``role``, bound to ``app`` (None: every app); returns the stored key
    and the key itself, which exists nowhere else: show it once. Committed when this returns."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; give one of {', '.join(ROLES)}")
    if app is not None and not app.strip():
        raise ValueError("the app a key is bound to must be a name, not blank; leave it out "
                         "for a key that may use every app")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    stored = ApiKey(str(uuid.uuid4()), role, app, name, time.time(), None, None)

    def apply(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO api_keys (key_id, hash, role, app, name, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (stored.key_id, key_hash(plaintext), role, app, name, stored.created_at))

    _wait(store, apply, f"api key {stored.key_id}")
    return stored, plaintext


def find_key(store: RunStore, key: str) -> ApiKey | None:
    """The stored key whose hash is that of ``key`` (revoked or not); None when there is none."""
    with store._lock:
        row = store._conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE hash = ?",
                                  (key_hash(key),)).fetchone()
    return None if row is None else ApiKey(*row)


def list_keys(store: RunStore, *, revoked: bool = True) -> list[ApiKey]:
    """Every stored key, oldest first; without the revoked ones when ``revoked`` is False."""
    sql = f"SELECT {_COLUMNS} FROM api_keys"
    if not revoked:
        sql += " WHERE revoked_at IS NULL"
    with store._lock:
        rows = store._conn.execute(sql + " ORDER BY created_at, key_id").fetchall()
    return [ApiKey(*row) for row in rows]


def revoke_key(store: RunStore, key_id: str) -> bool:
    """Revoke key ``key_id`` (committed when this returns); False when no key has that id or it
    was revoked already (its first revocation time is kept)."""
    found: list[bool] = []

    def apply(conn: sqlite3.Connection) -> None:
        done = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? "
                            "AND revoked_at IS NULL", (time.time(), key_id))
        found.append(done.rowcount == 1)

    _wait(store, apply, f"api key {key_id}")
    return bool(found and found[-1])  # the last attempt is the one committed


def touch_key(store: RunStore, key_id: str, at: float) -> None:
    """Queue: key ``key_id`` was used at ``at`` (not waited for; a request never waits on it)."""

    def apply(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?) "
                     "WHERE key_id = ?", (at, key_id))

    store.writer.submit(Write(f"api key {key_id}", apply, time.monotonic() + store.timeout,
                              "start"))


__all__ = ["KEY_PREFIX", "ROLES", "ApiKey", "create_key", "find_key", "key_hash", "list_keys",
           "revoke_key", "touch_key"]
