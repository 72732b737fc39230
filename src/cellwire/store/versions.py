"""Versions: the workflow a run ran, stored once per content hash.

A version is the workflow's native YAML (:func:`cellwire.formats.dump`, which never holds a
secret's value) in its compact form, since only cellwire reads it back: JSON, YAML's flow
style, written in 3 ms for 200 nodes where block YAML took 20-40 ms at the start of every run;
and its SHA-256. Every stored run records the hash of its version; a resume runs the recorded
version, not the current file.
"""

from __future__ import annotations

import hashlib
import weakref

from cellwire.engine import CompiledWorkflow
from cellwire.model import WorkflowError

#: The version of each compiled workflow (a changed workflow compiles anew), or why it has
#: none.
_versions: weakref.WeakKeyDictionary[CompiledWorkflow, tuple[str, str] | WorkflowError] = \
    weakref.WeakKeyDictionary()


def version_of(compiled: CompiledWorkflow) -> tuple[str, str]:
    """``(hash, native YAML)`` of the workflow ``compiled`` was made from; raises
    :class:`WorkflowError` when it cannot be written (a config holding a Python object)."""
    found = _versions.get(compiled)
    if found is None:
        # Here, not at the top: the formats read trust records, which live beside the store.
        from cellwire.formats.native import dump

        try:
            text = dump(compiled.workflow, compact=True)
        except WorkflowError as exc:
            found = exc
        else:
            found = (hashlib.sha256(text.encode()).hexdigest(), text)
        _versions[compiled] = found
    if isinstance(found, WorkflowError):
        raise found
    return found


__all__ = ["version_of"]
