"""Persistence of runs: the home folder, the SQLite run store, its event sink and views."""

import os

from .home import HOME_ENV, home, runs_db_path
from .schema import SchemaTooNew
from .sink import StoreSink
from .sqlite import RunNotFound, RunStore, is_open, open_store


def default_store() -> RunStore:
    """The store at ``<home>/runs.db`` (``$CELLWIRE_HOME`` or ``./.cellwire``)."""
    global _last
    # Every run asks: the home's path is resolved again only when what names it changed.
    key = (os.getpid(), os.environ.get(HOME_ENV), os.getcwd())
    last = _last
    if last is not None and last[0] == key and is_open(last[1]):
        return last[1]
    store = open_store(runs_db_path())
    _last = (key, store)
    return store


_last: tuple[tuple[int, str | None, str], RunStore] | None = None


__all__ = [
    "HOME_ENV", "RunNotFound", "RunStore", "SchemaTooNew", "StoreSink", "default_store", "home",
    "open_store", "runs_db_path",
]
