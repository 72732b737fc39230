"""The code sandbox: untrusted code nodes run in bubblewrap jails, never in the kernel.

``Sandbox()`` is a :class:`~cellwire.engine.services.CodeExecutor` for ``Runtime(code=...)``;
``shared_sandbox()`` is the process's own (what runs of untrusted files use);
``sandbox_unavailable()`` says why no sandbox can run here, and ``RefusingExecutor`` is what
runs untrusted code then: it refuses, saying how to install bubblewrap or trust the file.
See ``docs/security.md``.
"""

from .executor import RefusingExecutor, Sandbox
from .jail import unavailable as sandbox_unavailable
from .limits import Limits
from .packages import DEFAULT_PACKAGES, ENV_VAR, PackageNotFound
from .shared import shared_sandbox

__all__ = ["DEFAULT_PACKAGES", "ENV_VAR", "Limits", "PackageNotFound", "RefusingExecutor",
           "Sandbox", "sandbox_unavailable", "shared_sandbox"]
