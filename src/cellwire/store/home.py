"""Where cellwire keeps its files.

Runs, caches and files go to ``home()``: ``.cellwire/`` in the current folder, or
``$CELLWIRE_HOME``. What belongs to the *user* rather than to a project (trusted files, the
secrets file, provider configuration) goes to ``config_dir()``: never a folder that a cloned
repository could ship.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CELLWIRE_HOME"
HOME_DIR = ".cellwire"
RUNS_DB = "runs.db"
CONFIG_ENV = "CELLWIRE_CONFIG_DIR"


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


def config_dir(*, create: bool = False) -> Path:
    """The user's cellwire configuration folder: ``$CELLWIRE_CONFIG_DIR``, else
    ``$XDG_CONFIG_HOME/cellwire``, else ``~/.config/cellwire`` (created private, 0700)."""
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        path = Path(configured).expanduser()
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME")
        path = (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "cellwire"
    if create and not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path.resolve()
