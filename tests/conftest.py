"""Session-wide test settings."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the programs the tests start, however the suite was started.

    A shell without job control starts a background job (``make test &``) with SIGINT
    ignored, and every child inherits that: the tests that send SIGINT to a CLI, a script or
    ``make lab`` then saw it ignored. A handler (unlike "ignored") is reset to the default
    in a program the suite starts."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
