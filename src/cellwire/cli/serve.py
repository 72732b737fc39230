"""``cellwire serve PATH``: serve every workflow in a file or folder as Dify's Service API.

Callers authenticate with API keys (``cellwire keys create``) stored in the same ``--db``.
Exit codes: 0 stopped cleanly, 2 bad command line or no workflow to serve.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from cellwire.cli.app import cli
from cellwire.cli.common import fail


@cli.command("serve")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="run store (SQLite) for runs, conversations and API keys "
                   "[default: <home>/runs.db]")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="worker processes sharing the one store")
@click.option("--allow-private-network", is_flag=True,
              help="let http-request nodes reach loopback and private addresses")
@click.option("--trust", is_flag=True,
              help="trust the workflow files: their code runs outside the sandbox")
@click.option("--rate", default=50.0, show_default=True, type=click.FloatRange(min=0),
              help="requests per second per API key (bursts of twice as many; 0: no limit)")
@click.option("--max-runs", default=64, show_default=True, type=click.IntRange(min=0),
              help="runs in flight per API key (0: no limit)")
@click.option("--dask", metavar="ADDRESS", default=None,
              help="run on this Dask scheduler's workers (they must see the --db file)")
def serve(path: Path, host: str, port: int, db: Path | None, workers: int,
          allow_private_network: bool, trust: bool, rate: float, max_runs: int,
          dask: str | None) -> None:
    """Serve the workflows in PATH (a file or folder) with Dify's Service API at /v1."""
    import uvicorn

    from cellwire.serve.apps import AppLoadError, load_apps
    from cellwire.serve.factory import CONFIG_ENV, ServeConfig
    from cellwire.serve.server import KEEP_ALIVE
    from cellwire.store import runs_db_path

    try:
        apps = load_apps(path, trust=trust)
    except AppLoadError as exc:
        fail([f"error: {exc}"])
    store = str((db or runs_db_path()).resolve())
    config = ServeConfig(str(path.resolve()), store, trust, allow_private_network,
                         rate or None, max_runs or None, dask)
    os.environ[CONFIG_ENV] = config.to_env()
    click.echo(f"serving {', '.join(f'{a.name} ({a.mode})' for a in apps.values())} on "
               f"http://{host}:{port}/v1 (docs: /docs; runs in {store}; API keys: cellwire keys "
               f"create --db {store})", err=True)
    uvicorn.run("cellwire.serve.factory:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="info", timeout_graceful_shutdown=10,
                timeout_keep_alive=KEEP_ALIVE)
