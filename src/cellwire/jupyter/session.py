"""The notebook's workflows by name, the nodes cells define in them, and the runs started.

A node made by a cell remembers the cell in ``node.meta["cell_id"]`` and the upstream node ids
it asked for in ``node.meta["cell_refs"]``: running the cell again replaces exactly those
incoming edges (edges drawn elsewhere stay), renaming the node keeps its outgoing edges, and a
reference to a node that a later cell defines becomes an edge when that cell runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cellwire.model import Edge, Node, Workflow
from cellwire.runner import RunHandle

CELL_ID = "cell_id"
CELL_REFS = "cell_refs"


class SessionError(ValueError):
    """A request the session cannot carry out; the message names the fix."""


@dataclass
class Session:
    """Workflows by name and the runs started in this kernel, newest last."""

    workflows: dict[str, Workflow] = field(default_factory=dict)
    runs: dict[str, RunHandle] = field(default_factory=dict)

    # -- workflows ------------------------------------------------------------------------

    def workflow(self, name: str) -> Workflow:
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(self.workflows) or "none yet"
            raise SessionError(f"no workflow named {name!r} (known: {known}); define a node "
                               f"with %%workflow {name} NODE_ID --type TYPE") from None

    @staticmethod
    def without_cells(wf: Workflow) -> Workflow:
        """A copy of ``wf`` without the notebook's bookkeeping (which cell made each node):
        what an export writes unless asked to keep it."""
        copy = wf.model_copy(deep=True)
        for node in copy.nodes.values():
            if CELL_ID in node.meta or CELL_REFS in node.meta:
                node.meta = {k: v for k, v in node.meta.items() if k not in (CELL_ID, CELL_REFS)}
        return copy.mark_origin(wf.origin, trusted=wf.trusted)

    def delete(self, name: str) -> None:
        self.workflow(name)
        del self.workflows[name]

    # -- nodes from cells -----------------------------------------------------------------

    def define(self, name: str, node_id: str, node_type: str, config: dict[str, Any], *,
               cell_id: str | None, refs: Sequence[str] = (),
               after: Sequence[tuple[str, str]] = (), **options: Any) -> Node:
        """Add or update the node of ``cell_id`` (or of ``node_id`` outside a notebook)."""
        wf = self.workflows.setdefault(name, Workflow(name))
        key = cell_id or node_id
        self._leave_other_workflows(name, key)
        old = self._node_of_cell(wf, key)
        if node_id in wf.nodes and (old is None or old.id != node_id):
            owner = wf.nodes[node_id].meta.get(CELL_ID)
            if owner and owner != key:
                raise SessionError(f"node {node_id!r} of {name!r} is defined by another cell; "
                                   "give this node another id, or delete that cell first")
        if old is not None:
            self._drop_cell_edges(wf, old)
            if old.id != node_id:
                _rename(wf, old.id, node_id)
        # Config goes in after: its keys (http-request's ``timeout``) may clash with options.
        node = wf.add_node(node_id, node_type, **options)
        node.config = dict(config)
        requested = [r for r in refs if r != node_id] + [a for a, _ in after]
        node.meta = {**node.meta, CELL_ID: key, CELL_REFS: list(dict.fromkeys(requested))}
        for source in refs:
            if source != node_id and source in wf.nodes:
                wf.connect(source, node_id)
        for source, handle in after:
            wf.connect(source, node_id, handle)
        # Cells defined earlier that referred to this node, before it existed.
        for other in wf.nodes.values():
            if other.id != node_id and node_id in other.meta.get(CELL_REFS, ()):
                wf.connect(node_id, other.id)
        return node

    def delete_cells(self, cell_ids: Iterable[str]) -> list[tuple[str, str]]:
        """Remove the nodes the cells defined; returns ``(workflow, node_id)`` pairs."""
        removed = []
        for cell_id in cell_ids:
            for wf in self.workflows.values():
                node = self._node_of_cell(wf, cell_id)
                if node is not None:
                    wf.remove_node(node.id)
                    removed.append((wf.name, node.id))
        return removed

    def _leave_other_workflows(self, name: str, key: str) -> None:
        # A cell whose NAME changed moves its node to the new workflow.
        for other in self.workflows.values():
            if other.name != name:
                node = self._node_of_cell(other, key)
                if node is not None:
                    other.remove_node(node.id)

    @staticmethod
    def _node_of_cell(wf: Workflow, key: str) -> Node | None:
        for node in wf.nodes.values():
            if node.meta.get(CELL_ID) == key:
                return node
        return None

    @staticmethod
    def _drop_cell_edges(wf: Workflow, node: Node) -> None:
        asked = set(node.meta.get(CELL_REFS, ()))
        wf.edges = [e for e in wf.edges if not (e.target == node.id and e.source in asked)]

    # -- runs -----------------------------------------------------------------------------

    def add_run(self, handle: RunHandle) -> RunHandle:
        self.runs[handle.run_id] = handle
        return handle

    def find_run(self, run_id: str | None) -> RunHandle | None:
        """The run with that id (or id prefix); the latest run when ``run_id`` is None."""
        if run_id is None:
            return next(reversed(self.runs.values()), None)
        matches = [h for rid, h in self.runs.items() if rid.startswith(run_id)]
        return matches[0] if len(matches) == 1 else None


def _rename(wf: Workflow, old: str, new: str) -> None:
    node = wf.nodes.pop(old)
    wf.nodes[new] = node.model_copy(update={"id": new})
    wf.edges = [
        Edge(source=new if e.source == old else e.source,
             target=new if e.target == old else e.target, source_handle=e.source_handle)
        for e in wf.edges
    ]
    for other in wf.nodes.values():
        refs = other.meta.get(CELL_REFS)
        if refs and old in refs:
            other.meta = {**other.meta, CELL_REFS: [new if r == old else r for r in refs]}
