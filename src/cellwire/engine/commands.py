"""Commands a running execution takes from outside (the runner's command channel).

They are carried out on the run's own event loop (:meth:`RunHandle.send` gets them there from
any thread). Stop is the first; pause, resume and respond join it as the engine learns them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Command:
    """Something a user or a service asks of a run."""


@dataclass(frozen=True, slots=True)
class Stop(Command):
    """End the run now: in-flight nodes are cancelled and the run ends ``stopped``."""

    reason: str = "stopped by the user"


__all__ = ["Command", "Stop"]
