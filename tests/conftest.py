"""Session-wide test settings."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cellwire_home(tmp_path_factory):
    """Runs go to one temporary home per session, never into the repo's .cellwire/.

    One folder for the whole session, since each store keeps its connection open.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CELLWIRE_HOME", str(tmp_path_factory.mktemp("cellwire-home")))
        # The user's own configuration (trusted files, secrets, providers) stays untouched.
        mp.setenv("CELLWIRE_CONFIG_DIR", str(tmp_path_factory.mktemp("cellwire-config")))
        yield
