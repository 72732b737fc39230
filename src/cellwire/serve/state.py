"""What every route of a server shares, kept on ``app.state.serve``."""

from __future__ import annotations

from dataclasses import dataclass

from cellwire.store import RunStore
from cellwire.store.conversations import Conversations

from .apps import ServedApp
from .principal import Guard
from .runs import RunManager
from .uploads import Uploads


@dataclass
class ServeState:
    """The server's apps, guard, runs, store, uploads and conversations."""

    apps: dict[str, ServedApp]
    guard: Guard
    runs: RunManager
    store: RunStore
    uploads: Uploads
    conversations: Conversations


__all__ = ["ServeState"]
