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


@pytest.fixture(autouse=True)
def _no_node_cache_after_magics():
    """A test that loads the magics turns the kernel's node cache on for the process's
    runner (``WorkflowMagics.node_cache``): later tests get a runner that runs every node."""
    yield
    from cellwire.runner import default_runner

    runner = default_runner()
    if runner.options.node_cache:
        runner.configure(node_cache=False)
        runner.node_cache.clear()
