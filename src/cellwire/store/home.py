"""Where cellwire keeps its files: ``.cellwire/`` in the current folder, or ``$CELLWIRE_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CELLWIRE_HOME"
HOME_DIR = ".cellwire"
RUNS_DB = "runs.db"


def home(*, create: bool = False) -> Path:
    """The folder for runs, caches and files; read from the environment on every call."""
    configured = os.environ.get(HOME_ENV)
    path = Path(configured).expanduser() if configured else Path.cwd() / HOME_DIR
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def runs_db_path() -> Path:
    """The default run store: ``<home>/runs.db``."""
    return home() / RUNS_DB
