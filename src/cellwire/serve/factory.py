"""The app ``cellwire serve`` runs, built from a :class:`ServeConfig` in each worker process.

uvicorn starts ``--workers N`` processes that each import the app: the settings travel in
``$CELLWIRE_SERVE_CONFIG`` (JSON), and every worker opens the same SQLite store (WAL, with a
busy timeout: writers wait for each other, readers never block).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from fastapi import FastAPI

#: The environment variable carrying a server's settings to its worker processes.
CONFIG_ENV = "CELLWIRE_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    """What ``cellwire serve`` was told: the workflows, the store and the policies."""

    path: str
    db: str
    trust: bool = False
    allow_private_network: bool = False
    #: Requests per second per key (bursts of twice as many); None: no rate limit.
    rate: float | None = 50.0
    #: Runs in flight per key; None: no limit.
    max_runs: int | None = 64
    #: The Dask scheduler whose workers run the runs; None: this server's processes.
    dask: str | None = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        raw = os.environ.get(CONFIG_ENV)
        if not raw:
            raise RuntimeError(f"{CONFIG_ENV} is not set: start the server with cellwire serve")
        return cls(**json.loads(raw))


def build(config: ServeConfig) -> FastAPI:
    """The Service API for ``config``, guarded by the API keys in its store."""
    from cellwire.serve.app import create_app
    from cellwire.serve.apps import load_apps
    from cellwire.serve.auth import KeyGuard
    from cellwire.store import RunStore

    apps = load_apps(config.path, trust=config.trust)
    store = RunStore(config.db)
    guard = KeyGuard(store, rate=config.rate, burst=max(1, int(2 * (config.rate or 0))),
                     max_concurrent_runs=config.max_runs)
    return create_app(apps, store=store, guard=guard, trust=config.trust,
                      allow_private_network=config.allow_private_network, dask=config.dask)


def app_from_env() -> FastAPI:
    """uvicorn's factory in each worker process."""
    return build(ServeConfig.from_env())


__all__ = ["CONFIG_ENV", "ServeConfig", "app_from_env", "build"]
