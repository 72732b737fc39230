"""Who is calling a served app, and the guard every route asks before it acts.

The routes (``serve/routes``) depend only on the ``Guard`` protocol; ``serve/auth.py`` is the
implementation (hashed API keys, optional JWTs, per-key rate and concurrency limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from starlette.requests import Request


class Role(StrEnum):
    """What a key may do; each role includes the ones below it."""

    VIEWER = "viewer"    # read runs, logs, conversations, parameters
    RUNNER = "runner"    # and run, stop, answer human-input forms, upload files
    ADMIN = "admin"      # and manage keys and apps

    def includes(self, other: Role) -> bool:
        """True when this role may do what ``other`` may."""
        order = [Role.VIEWER, Role.RUNNER, Role.ADMIN]
        return order.index(self) >= order.index(other)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the key (or JWT subject) and what it is bound to."""

    key_id: str
    role: Role
    app: str | None  # None: every app the server serves

    def may(self, role: Role, app: str | None) -> bool:
        """True when this caller has ``role`` on ``app`` (None: no particular app)."""
        bound = self.app is None or app is None or self.app == app
        return bound and self.role.includes(role)


class RunSlot(Protocol):
    """One of a key's concurrent runs; released when the run ends (idempotent)."""

    def release(self) -> None: ...


class Guard(Protocol):
    """Authenticates and limits each request (lives on ``app.state.guard``)."""

    async def check(self, request: Request, *, app: str | None, role: Role) -> Principal:
        """The caller, or ServeError 401 (no or bad credential), 403 (role or app), 429 (rate)."""
        ...

    def run_slot(self, principal: Principal) -> RunSlot:
        """Take one of the key's concurrent-run slots, or raise ServeError 429."""
        ...
