"""``%workflow serve``: a notebook's workflow served with Dify's Service API from a thread of
the kernel (the kernel stays free), and stopped again; one server per kernel."""

from __future__ import annotations

import threading

from cellwire.model import Workflow
from cellwire.store import RunStore

_lock = threading.Lock()
_current: NotebookServer | None = None


class NotebookServer:
    """A running server: ``url`` (the API base, ``.../v1``), ``key`` (an API key bound to the
    app, role runner), ``app`` (its name); ``stop()`` ends it."""

    def __init__(self, workflow: Workflow, store: RunStore, *, host: str, port: int):
        from cellwire.serve.app import create_app
        from cellwire.serve.apps import ServedApp
        from cellwire.serve.auth import KeyGuard
        from cellwire.serve.server import BackgroundServer
        from cellwire.store.keys import create_key

        self.app = workflow.name
        served = {workflow.name: ServedApp(workflow.name, workflow, None)}
        guard = KeyGuard(store)
        api = create_app(served, store=store, guard=guard, trust=workflow.trusted)
        self._server = BackgroundServer(api, host=host, port=port).start()
        self.url = f"{self._server.url}/v1"
        self.key = create_key(store, "runner", app=workflow.name, name="%workflow serve")[1]

    @property
    def running(self) -> bool:
        return self._server.running

    def stop(self) -> None:
        self._server.stop()

    def __repr__(self) -> str:
        # The key is a credential: it is on .key, never in the cell's output.
        state = "serving" if self.running else "stopped"
        return f"NotebookServer({self.app!r} {state} at {self.url}; API key in .key)"


def start(workflow: Workflow, store: RunStore, *, host: str = "127.0.0.1",
          port: int = 0) -> NotebookServer:
    """Serve ``workflow`` (stopping the kernel's previous server first)."""
    global _current
    with _lock:
        if _current is not None:
            _current.stop()
        _current = NotebookServer(workflow, store, host=host, port=port)
        return _current


def stop() -> NotebookServer | None:
    """Stop the kernel's server; returns it (None when none was running)."""
    global _current
    with _lock:
        found, _current = _current, None
    if found is not None:
        found.stop()
    return found


__all__ = ["NotebookServer", "start", "stop"]
