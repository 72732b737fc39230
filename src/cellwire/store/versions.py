"""Versions: the workflow a run ran, stored once per content hash.

A version is the workflow's native YAML (:func:`cellwire.formats.dump`, which never holds a
secret's value) and its SHA-256. Every stored run records the hash of its version; a resume
runs the recorded version, not the current file.
"""

from __future__ import annotations

import hashlib
import weakref

from cellwire.engine import CompiledWorkflow
from cellwire.formats.native import dump

#: The version of each compiled workflow (a changed workflow compiles anew).
_versions: weakref.WeakKeyDictionary[CompiledWorkflow, tuple[str, str]] = \
    weakref.WeakKeyDictionary()


def version_of(compiled: CompiledWorkflow) -> tuple[str, str]:
    """``(hash, native YAML)`` of the workflow ``compiled`` was made from."""
    found = _versions.get(compiled)
    if found is None:
        text = dump(compiled.workflow)
        found = _versions[compiled] = (hashlib.sha256(text.encode()).hexdigest(), text)
    return found


__all__ = ["version_of"]
