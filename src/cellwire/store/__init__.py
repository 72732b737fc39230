"""Persistence of runs: the home folder, the SQLite run store, its event sink and views."""

from .home import HOME_ENV, home, runs_db_path
from .schema import SchemaTooNew
from .sink import StoreSink
from .sqlite import RunNotFound, RunStore, open_store


def default_store() -> RunStore:
    """The store at ``<home>/runs.db`` (``$CELLWIRE_HOME`` or ``./.cellwire``)."""
    return open_store(runs_db_path())


__all__ = [
    "HOME_ENV", "RunNotFound", "RunStore", "SchemaTooNew", "StoreSink", "default_store", "home",
    "open_store", "runs_db_path",
]
