"""Stale tracking: which nodes of a workflow changed since its last run.

The runner keeps a :class:`Ledger` with one :class:`Record` per workflow object: the last run
(its in-memory state holds every node's outputs, reused ones included) and, for each
top-level node whose result in that state is good (it succeeded, or was skipped as its
branches decided), the fingerprint it had when it ran. A node is stale when it has no such
fingerprint (it failed, handled its error, never ran) or its fingerprint changed, or the
inputs it reads changed; everything downstream of a stale node is stale too, and so is
everything inside a stale iteration or loop. A run with ``stale=True`` executes only those.

Every run the runner starts is recorded (``wf.run()``, ``%workflow run``, the editor, the
CLI), so each of them sees what the others ran.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cellwire.engine import CompiledWorkflow, Execution, NodeStatus, RunResult
from cellwire.engine.events import NodeFinished, NodeSkipped
from cellwire.model import Workflow

#: Statuses of a top-level node whose recorded result a later run may reuse.
GOOD = frozenset({NodeStatus.SUCCEEDED, NodeStatus.SKIPPED})


@dataclass(slots=True)
class Record:
    """The last run of one workflow object and the fingerprints its good results had."""

    result: RunResult
    fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> dict[str, Any]:
        """The inputs the run had (its real values, never redacted ones)."""
        state = self.result.state
        return dict(state.inputs) if state is not None else dict(self.result.inputs)


@dataclass(frozen=True, slots=True)
class Staleness:
    """What is stale in a workflow, and how a run executes only that."""

    #: Stale nodes in the workflow's order (nodes inside a stale container included).
    nodes: tuple[str, ...]
    #: The top-level stale nodes no other stale node leads to: a rerun starts there.
    starts: tuple[str, ...]
    #: The run whose results the nodes that are not stale keep; None: run everything.
    previous: RunResult | None
    #: The inputs of the last run, under those given now: what the rerun gets.
    inputs: dict[str, Any]

    def options(self) -> dict[str, Any]:
        """The run options that execute only the stale nodes (the whole run without a
        previous run)."""
        if self.previous is None:
            return {"stale_nodes": self.nodes}
        return {"previous": self.previous, "start_at": self.starts, "stale_nodes": self.nodes}


class Ledger:
    """The last run of each workflow object (kept while the object lives), thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[int, tuple[weakref.ref[Workflow], Record]] = {}
        #: Called with the workflow after each run is recorded (open editors redraw their
        #: stale badges), on the thread the run ended on; one that raises is ignored.
        self.listeners: list[Callable[[Workflow], None]] = []

    def get(self, workflow: Workflow) -> Record | None:
        with self._lock:
            entry = self._records.get(id(workflow))
            return entry[1] if entry is not None and entry[0]() is workflow else None

    def forget(self, workflow: Workflow) -> None:
        """Drop what is known of ``workflow``'s runs: every node is stale again."""
        with self._lock:
            self._records.pop(id(workflow), None)

    def record(self, execution: Execution, result: RunResult,
               fingerprints: Mapping[str, str]) -> None:
        """Remember ``result`` as the last run of its workflow; ``fingerprints`` are those
        the run was started with."""
        state = result.state
        if state is None:
            return
        workflow = execution.compiled.workflow
        before = self.get(workflow)
        carried = before.fingerprints if before is not None \
            and before.result is execution.previous else {}
        ran = {e.node_id for e in result.events
               if isinstance(e, (NodeFinished, NodeSkipped)) and e.parent_id is None}
        good: dict[str, str] = {}
        for node_id, status in state.nodes.items():
            if status not in GOOD:
                continue
            if node_id in ran:
                if node_id in fingerprints:
                    good[node_id] = fingerprints[node_id]
            elif node_id in carried:
                # Reused from the run before: it keeps the fingerprint it ran with.
                good[node_id] = carried[node_id]
        number = id(workflow)

        def forget(ref: weakref.ref[Workflow], records: dict[int, Any] = self._records) -> None:
            if records.get(number, (None,))[0] is ref:
                del records[number]

        with self._lock:
            self._records[number] = (weakref.ref(workflow, forget), Record(result, good))
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(workflow)

    def stale(self, compiled: CompiledWorkflow, fingerprints: Mapping[str, str],
              inputs: Mapping[str, Any] | None = None) -> Staleness:
        """The stale nodes of ``compiled.workflow`` for a run with ``fingerprints`` and
        ``inputs`` (None or missing keys: those of the last run)."""
        workflow = compiled.workflow
        record = self.get(workflow)
        top = compiled.graphs[None]
        members = list(top.in_count)
        given = dict(inputs or {})
        if record is None:
            changed = set(members)
            merged = given
        else:
            merged = {**record.inputs, **given}
            changed = {n for n in members if record.fingerprints.get(n) != fingerprints.get(n)}
            changed |= _readers_of_changed_inputs(compiled, record.inputs, merged)
        stale = _downstream(top.out_edges, changed)
        led_to = {t for s in stale for _, t in top.out_edges[s]}
        starts = tuple(n for n in members if n in stale and n not in led_to)
        everything = stale == set(members)
        previous = None if record is None or everything else record.result
        inside = _inside(workflow, stale)
        ordered = tuple(n for n in workflow.nodes if n in stale or n in inside)
        return Staleness(ordered, starts, previous, merged)


def _downstream(out_edges: Mapping[str, tuple[tuple[str, str], ...]],
                nodes: set[str]) -> set[str]:
    found = set(nodes)
    todo = list(nodes)
    while todo:
        for _, target in out_edges.get(todo.pop(), ()):
            if target not in found:
                found.add(target)
                todo.append(target)
    return found


def _inside(workflow: Workflow, containers: set[str]) -> set[str]:
    """Every node inside one of ``containers``, however deep."""
    found: set[str] = set()
    todo = list(containers)
    while todo:
        for child in workflow.children(todo.pop()):
            if child.id not in found:
                found.add(child.id)
                todo.append(child.id)
    return found


def _readers_of_changed_inputs(compiled: CompiledWorkflow, before: Mapping[str, Any],
                               now: Mapping[str, Any]) -> set[str]:
    """Top-level nodes that read an input whose value changed: the start node for its
    inputs, any node reading ``sys.NAME`` for a changed ``sys.NAME`` input."""
    keys = {k for k in {*before, *now} if not _same(before.get(k, _GONE), now.get(k, _GONE))}
    if not keys:
        return set()
    system = {k[4:] for k in keys if k.startswith("sys.")}
    found = {n for n in compiled.graphs[None].in_count
             if compiled.nodes[n].type == "start" and len(system) < len(keys)}
    # A node inside an iteration or loop that reads ``sys`` reruns with its container.
    found |= {_top(compiled, n) for n in compiled.nodes
              if any(s[0] == "sys" and s[1] in system for s in compiled.reads(n))}
    return found


def _top(compiled: CompiledWorkflow, node_id: str) -> str:
    seen = {node_id}
    while (parent := compiled.nodes[node_id].parent) is not None and parent in compiled.nodes \
            and parent not in seen:
        seen.add(node_id := parent)
    return node_id


_GONE = object()


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values without a plain == (arrays, frames): changed
        return a is b


__all__ = ["GOOD", "Ledger", "Record", "Staleness"]
