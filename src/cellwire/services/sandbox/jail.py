"""The bubblewrap jail a worker runs in: its command line, and whether one can start here.

What the jail sees: ``/usr`` (with ``/bin``, ``/lib*`` as its symlinks) and the Python
interpreter's prefix, read-only, with their site-packages masked; the allowed packages,
read-only, in ``/sandbox/site``; the worker's own files in ``/sandbox/lib``; a private,
size-capped ``/tmp`` (its working folder); a minimal read-only ``/dev``; its own ``/proc``.
No ``/etc``, no home folder, no project folder, no store, no network (a loopback of its own),
an empty environment, its own PID, IPC, UTS and user namespaces, no capabilities, uid 65534.

Run as root, bubblewrap maps the sandbox user to root outside, where the kernel does not
enforce the process limit; so as root the jail's user namespace maps uid 65534 to the host's
65534 (``nobody``) instead, and the worker drops to it before running anything.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from cellwire.engine import usercode

#: The uid and gid code runs as, inside and (when cellwire runs as root) outside the jail.
SANDBOX_UID = 65534
SITE = "/sandbox/site"
LIB = "/sandbox/lib"
NODE = "/sandbox/bin/node"
INSIDE = Path(__file__).with_name("inside")


def base_python() -> Path:
    """The interpreter binary itself (a venv's python is a link to it, or a copy)."""
    return Path(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))


def _masked_site_dirs(prefix: Path) -> list[str]:
    # The interpreter's own site-packages, and the system's dist-packages of the same
    # version that /usr exposes: only allowed packages are importable.
    minor = f"python3.{sys.version_info.minor}"
    candidates = [*site.getsitepackages([str(prefix)]), "/usr/lib/python3/dist-packages",
                  f"/usr/lib/{minor}/dist-packages", f"/usr/local/lib/{minor}/dist-packages",
                  f"/usr/local/lib/{minor}/site-packages"]
    return [d for d in dict.fromkeys(candidates) if os.path.isdir(d)]


@dataclass(frozen=True)
class Jail:
    """How to start a jailed worker: ``command(...)`` is its bubblewrap command line."""

    bwrap: str = "bwrap"
    #: Allowed packages: import name -> host files, bound under :data:`SITE`.
    packages: Mapping[str, list[Path]] = field(default_factory=dict)
    tmp_bytes: int = 64 * 1024 * 1024
    node: str | None = None
    #: Map the sandbox user to the host's uid 65534 (needed when cellwire runs as root).
    map_nobody: bool = field(default_factory=lambda: os.geteuid() == 0)

    def command(self, boot_args: str, *, info_fd: int, userns_block_fd: int | None) -> list[str]:
        """bubblewrap's argv for a worker whose bootstrap gets ``boot_args``."""
        python = base_python()
        prefix = Path(sys.base_prefix)
        argv = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
                "--info-fd", str(info_fd), "--cap-drop", "ALL", "--unshare-user"]
        if self.map_nobody:
            if userns_block_fd is None:
                raise ValueError("a jail that maps nobody needs userns_block_fd")
            # The worker starts as root of its own user namespace with these two
            # capabilities only, to drop to 65534 (see inside/boot.py).
            argv += ["--userns-block-fd", str(userns_block_fd),
                     "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            argv += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        argv += _system()
        for path in _outside_usr(prefix, python):
            # Folders on the way are made for the bind; the sandbox user must cross them.
            for folder in reversed(path.parents[:-1]):
                argv += ["--perms", "0755", "--dir", str(folder)]
            argv += ["--ro-bind", str(path), str(path)]
        for masked in _masked_site_dirs(prefix):
            argv += ["--tmpfs", masked, "--remount-ro", masked]
        for made in ("/sandbox", SITE, LIB, os.path.dirname(NODE)):
            argv += ["--perms", "0755", "--dir", made]
        for paths in self.packages.values():
            for path in paths:
                argv += ["--ro-bind", str(path), f"{SITE}/{path.name}"]
        for name in ("boot.py", "main.js"):
            argv += ["--ro-bind", str(INSIDE / name), f"{LIB}/{name}"]
        argv += ["--ro-bind", usercode.__file__, f"{LIB}/cellwire_usercode.py"]
        if self.node:
            argv += ["--ro-bind", self.node, NODE]
        argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
                 "--perms", "1777", "--size", str(self.tmp_bytes), "--tmpfs", "/tmp",
                 "--remount-ro", "/", "--chdir", "/tmp", "--clearenv",
                 str(python), "-I", "-S", "-B", "-X", "utf8", f"{LIB}/boot.py", boot_args]
        return argv


def _outside_usr(*paths: Path) -> list[Path]:
    # The interpreter's prefix and binary, unless /usr already holds them.
    kept: list[Path] = []
    for path in paths:
        if path.is_relative_to("/usr") or any(path.is_relative_to(k) for k in kept):
            continue
        kept.append(path)
    return kept


def find_node(node: str | None = "node") -> str | None:
    """The real path of the Node binary, or None without one."""
    found = shutil.which(node) if node else None
    return os.path.realpath(found) if found else None


def unavailable(bwrap: str = "bwrap") -> str | None:
    """Why no jail can start here (bubblewrap missing, namespaces refused), or None."""
    return _probe(bwrap)


@cache
def _probe(bwrap: str) -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux (bubblewrap), and this is {sys.platform}"
    path = shutil.which(bwrap)
    if path is None:
        return f"bubblewrap ({bwrap}) is not installed"
    argv = [path, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", *_system(), "--proc", "/proc", "--dev", "/dev", "--clearenv",
            "/usr/bin/env", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap ({path}) could not run: {exc}"
    if done.returncode != 0:
        said = done.stderr.strip() or f"exit code {done.returncode}"
        return f"bubblewrap ({path}) cannot create the sandbox's namespaces here: {said}"
    return None


def _system() -> list[str]:
    """/usr, read-only, and the top-level folders that are links into it (or copies)."""
    argv = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        target = Path("/", name)
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), f"/{name}"]
        elif target.is_dir():
            argv += ["--ro-bind", str(target), f"/{name}"]
    return argv
