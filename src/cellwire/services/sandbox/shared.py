"""The process's own sandbox, for untrusted runs: one pool of workers however many runs,
loops and threads use it, started on first use and closed when the process exits."""

from __future__ import annotations

import atexit
import os
import threading

from cellwire.engine.services import CodeExecutor, CodeFailed

from .executor import RefusingExecutor, Sandbox
from .jail import unavailable
from .packages import ENV_VAR, PackageNotFound, from_env

_lock = threading.Lock()
_shared: tuple[int, CodeExecutor] | None = None


def shared_sandbox() -> CodeExecutor:
    """The process-wide executor for untrusted code: a :class:`Sandbox` allowing the default
    packages and those named in ``$CELLWIRE_SANDBOX_PACKAGES``, or, where no sandbox can run
    here, a :class:`RefusingExecutor` that says why and how to fix it. Never the kernel."""
    global _shared
    with _lock:
        if _shared is None or _shared[0] != os.getpid():  # a forked child makes its own
            _shared = (os.getpid(), _make())
        return _shared[1]


def _make() -> CodeExecutor:
    reason = unavailable()
    if reason is not None:
        return RefusingExecutor.unavailable(reason)
    try:
        sandbox = Sandbox(packages=from_env())
    except PackageNotFound as exc:
        return RefusingExecutor(CodeFailed(f"${ENV_VAR} is wrong: {exc}",
                                           hint=f"fix or unset ${ENV_VAR}",
                                           error_type="SandboxUnavailable"))
    atexit.register(sandbox.close)
    return sandbox
