"""Which Python packages sandboxed code may import, and where they are on this machine.

The standard library is always there. Third-party packages are bound into the jail one by
one, read-only, from the environment cellwire runs in; nothing else of that environment is
visible. An import of anything else fails, naming the package and how to allow it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Allowed by default: small, pure data helpers that cellwire's own dependencies bring
#: (pandas brings dateutil and six, PyYAML is yaml, Jinja2 brings markupsafe), and requests
#: with what it imports, since Dify's own sandbox ships it and Dify apps import it at the
#: top of their code (there is no network in the jail: a request fails, saying so). A
#: package's own imports must be allowed too: dateutil needs six, jinja2 needs markupsafe.
DEFAULT_PACKAGES: tuple[str, ...] = ("dateutil", "six", "yaml", "jinja2", "markupsafe",
                                     "requests", "urllib3", "idna", "charset_normalizer",
                                     "certifi")

#: Comma-separated import names added to :data:`DEFAULT_PACKAGES` by the shared sandbox.
ENV_VAR = "CELLWIRE_SANDBOX_PACKAGES"


class PackageNotFound(ValueError):
    """An allowed package is not installed where cellwire runs."""


def from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """:data:`DEFAULT_PACKAGES` plus the names in ``$CELLWIRE_SANDBOX_PACKAGES``."""
    extra = (environ if environ is not None else os.environ).get(ENV_VAR, "")
    names = [n.strip() for n in extra.split(",") if n.strip()]
    return tuple(dict.fromkeys([*DEFAULT_PACKAGES, *names]))


def locate(names: Iterable[str]) -> dict[str, list[Path]]:
    """The files to bind for each allowed import name, by name.

    A name of the standard library needs nothing. A name not installed raises
    :class:`PackageNotFound`, unless it is one of the defaults (left out where missing).
    """
    found: dict[str, list[Path]] = {}
    for name in names:
        if "." in name or not name.isidentifier():
            raise PackageNotFound(f"{name!r} is not a top-level import name; allow the "
                                  "package by the name you import, e.g. 'dateutil'")
        if name in sys.stdlib_module_names:
            continue
        paths = _paths(name)
        if paths:
            found[name] = paths
        elif name not in DEFAULT_PACKAGES:
            raise PackageNotFound(f"the allowed package {name!r} is not installed in this "
                                  f"environment ({sys.prefix}); pip install it, or leave it out")
    return found


def _paths(name: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        paths = [Path(p) for p in spec.submodule_search_locations]
        # auditwheel puts a wheel's shared libraries beside it (numpy.libs).
        libs = paths[0].with_name(f"{name}.libs")
        return [*paths, *([libs] if libs.is_dir() else [])]
    if spec.origin and spec.has_location:
        return [Path(spec.origin)]
    return []


def import_hint(module: str, allowed: Iterable[str]) -> str:
    """How to make ``import module`` work in the sandbox."""
    top = module.partition(".")[0]
    trust = "or trust the file so its code runs in the kernel"
    if top in set(allowed):
        return (f"{top!r} is allowed but {module!r} is not part of it; check the name, or allow "
                "the package it comes from")
    if _paths(top):
        return (f"{top!r} is installed but not allowed in the sandbox: allow it with "
                f"{ENV_VAR}={top} (or Sandbox(packages=[..., {top!r}])), {trust}")
    return (f"{top!r} is not installed: pip install it, then allow it with {ENV_VAR}={top}, "
            f"{trust}")
