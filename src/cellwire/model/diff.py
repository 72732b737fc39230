"""Two versions of a workflow compared node by node (``cellwire diff``).

Only names and field paths are reported, never values: a changed environment variable may be
a secret, and a changed prompt is better read in the files themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .workflow import Workflow

Kind = Literal["added", "removed", "changed"]

#: Node fields compared besides ``config`` (title, position and meta never change a run).
_NODE_FIELDS = ("type", "parent", "error_strategy", "default_value", "retry", "max_time")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: ``what`` is ``node``, ``edge``, ``environment``,
    ``conversation_variable`` or ``workflow``; ``fields`` are the changed field paths."""

    what: str
    name: str
    kind: Kind
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        mark = {"added": "+", "removed": "-", "changed": "~"}[self.kind]
        shown = f": {', '.join(self.fields)}" if self.fields else ""
        return f"{mark} {self.what} {self.name}{shown}"


def diff(a: Workflow, b: Workflow) -> list[Change]:
    """What changed from ``a`` to ``b``: nodes (in ``b``'s order, then the removed ones),
    edges, environment and conversation variables, and the workflow's own settings."""
    changes: list[Change] = []
    for node_id in [*b.nodes, *(n for n in a.nodes if n not in b.nodes)]:
        old, new = a.nodes.get(node_id), b.nodes.get(node_id)
        if old is None and new is not None:
            changes.append(Change("node", f"{node_id} ({new.type})", "added"))
        elif new is None and old is not None:
            changes.append(Change("node", f"{node_id} ({old.type})", "removed"))
        elif old is not None and new is not None:
            fields = [f for f in _NODE_FIELDS if getattr(old, f) != getattr(new, f)]
            fields += [f"config.{key}" for key in _changed_keys(old.config, new.config)]
            if fields:
                changes.append(Change("node", node_id, "changed", tuple(fields)))
    old_edges = {e.key for e in a.edges}
    new_edges = {e.key for e in b.edges}
    for source, handle, target in sorted(new_edges - old_edges):
        changes.append(Change("edge", _edge(source, handle, target), "added"))
    for source, handle, target in sorted(old_edges - new_edges):
        changes.append(Change("edge", _edge(source, handle, target), "removed"))
    changes += _named("environment", {v.name: v.model_dump() for v in a.environment},
                      {v.name: v.model_dump() for v in b.environment})
    changes += _named("conversation_variable",
                      {v.name: v.model_dump() for v in a.conversation_variables},
                      {v.name: v.model_dump() for v in b.conversation_variables})
    settings = [f for f in ("name", "mode", "features") if getattr(a, f) != getattr(b, f)]
    if settings:
        changes.append(Change("workflow", b.name, "changed", tuple(settings)))
    return changes


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [k for k in [*new, *(k for k in old if k not in new)] if old.get(k) != new.get(k)]


def _named(what: str, old: dict[str, dict[str, Any]],
           new: dict[str, dict[str, Any]]) -> list[Change]:
    changes = []
    for name in [*new, *(n for n in old if n not in new)]:
        if name not in old:
            changes.append(Change(what, name, "added"))
        elif name not in new:
            changes.append(Change(what, name, "removed"))
        elif old[name] != new[name]:
            changes.append(Change(what, name, "changed", tuple(_changed_keys(old[name], new[name]))))
    return changes


def _edge(source: str, handle: str, target: str) -> str:
    return f"{source} -> {target}" + (f" [{handle}]" if handle != "source" else "")


__all__ = ["Change", "diff"]
