"""The plan of a workflow: validated once, each graph level precomputed (roots, edge counts,
out-edges), reused by every run of the same workflow object while it stays unchanged."""

from __future__ import annotations

import pickle
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from pydantic import BaseModel

from cellwire.model import Node, NodeType, Problem, Workflow, WorkflowError, registry
from cellwire.model.selectors import Selector
from cellwire.model.validate import graph_roots, validate_configs

if TYPE_CHECKING:
    from .result import RunResult
    from .runtime import Runtime


@dataclass(slots=True)
class GraphPlan:
    """One level of the graph (the top, or the inside of one container), precomputed."""

    container: str | None
    roots: tuple[str, ...]
    in_count: dict[str, int]
    out_edges: dict[str, tuple[tuple[str, str], ...]]  # node -> ((handle, target), ...)
    unreachable: tuple[str, ...]


class CompiledWorkflow:
    """A validated workflow with parsed configs and graph plans, ready to run many times."""

    def __init__(self, workflow: Workflow):
        problems, configs = validate_configs(workflow)
        errors = [p for p in problems if p.level == "error"]
        if errors:
            raise WorkflowError(errors, f"workflow {workflow.name!r} is not valid")
        self.workflow = workflow
        #: What Dify would import and a run treats as Dify does (a missing reference reads
        #: None, a dead edge is ignored): said in every run's result.
        self.warnings: list[Problem] = [p for p in problems if p.level == "warning"]
        self.nodes: dict[str, Node] = dict(workflow.nodes)
        self.types: dict[str, NodeType] = {n: registry.get(v.type) for n, v in self.nodes.items()}
        self.configs: dict[str, Any] = configs
        self.branching: dict[str, bool] = {
            n: self.types[n].handles is not None or v.error_strategy == "fail-branch"
            for n, v in self.nodes.items()
        }
        containers = [n for n, t in self.types.items() if t.container]
        self.graphs: dict[str | None, GraphPlan] = {
            c: self._plan(c) for c in [None, *containers]
        }
        self._fingerprints: dict[str | None, dict[str, str]] = {}
        self._reads: dict[str, tuple[Selector, ...]] | None = None

    def fingerprints(self, model: str | None = None) -> dict[str, str]:
        """Each node's fingerprint for runs whose model override is ``model``
        (:mod:`.fingerprint`); computed once per override."""
        found = self._fingerprints.get(model)
        if found is None:
            from .fingerprint import fingerprints

            found = self._fingerprints[model] = fingerprints(self, model)
        return found

    def reads(self, node_id: str) -> tuple[Selector, ...]:
        """The selectors ``node_id`` reads; computed once for every node."""
        if self._reads is None:
            from .fingerprint import node_reads

            self._reads = {n: node_reads(self, n) for n in self.nodes}
        return self._reads[node_id]

    def _plan(self, container: str | None) -> GraphPlan:
        members = [n.id for n in self.workflow.children(container)]
        member_set = set(members)
        in_count = dict.fromkeys(members, 0)
        out: dict[str, list[tuple[str, str]]] = {n: [] for n in members}
        for edge in self.workflow.edges:
            if edge.source in member_set and edge.target in member_set:
                out[edge.source].append((edge.source_handle, edge.target))
                in_count[edge.target] += 1
        roots = tuple(graph_roots(self.workflow, container, self.types))
        unreachable = tuple(n for n in members if in_count[n] == 0 and n not in roots)
        return GraphPlan(container, roots, in_count, {k: tuple(v) for k, v in out.items()},
                         unreachable)

    def start_inputs(self) -> list[dict[str, Any]]:
        return [
            var
            for n in self.graphs[None].roots
            if self.nodes[n].type == "start"
            for var in self.nodes[n].config.get("variables") or []
        ]

    async def run(self, inputs: Mapping[str, Any] | None = None, *,
                  runtime: Runtime | None = None, **options: Any) -> RunResult:
        """Run once; see :class:`~cellwire.engine.executor.Execution` for the options."""
        from .executor import Execution
        from .runtime import Runtime

        return await Execution(self, inputs or {}, runtime or Runtime(), **options).run()


def rerun_plan(plan: GraphPlan, start_at: str | Collection[str], *, single: bool,
               handles: Mapping[str, str | None],
               branching: Mapping[str, bool]) -> tuple[GraphPlan, dict[str, int]]:
    """The part of ``plan`` a rerun from ``start_at`` (a node, or several) runs (only those
    nodes when ``single``), and the edges into it already taken by the nodes it reuses:
    ``handles`` holds each finished node's decision in the previous run.

    Of several start nodes, one that another one reaches waits for it like any node. One
    that nothing in the rerun reaches, every edge into which the previous run decided
    without taking any (its sources chose another branch or were skipped), is skipped as it
    was then; a single start node always runs ("run this node").
    """
    starts = (start_at,) if isinstance(start_at, str) else tuple(dict.fromkeys(start_at))
    downstream = set(starts)
    reached: set[str] = set()
    todo = [] if single else list(starts)
    while todo:
        for _, target in plan.out_edges[todo.pop()]:
            reached.add(target)
            if target not in downstream:
                downstream.add(target)
                todo.append(target)
    if single:
        reached = {t for n in starts for _, t in plan.out_edges[n] if t in downstream}
    roots = [n for n in starts if n not in reached]
    in_count = dict.fromkeys(downstream, 0)
    taken: dict[str, int] = {}
    entering: set[str] = set()
    for source, edges in plan.out_edges.items():
        for edge_handle, target in edges:
            if target not in downstream:
                continue
            if source in downstream:
                in_count[target] += 1
                continue
            entering.add(target)
            if source in handles and (not branching[source] or handles[source] == edge_handle):
                taken[target] = taken.get(target, 0) + 1
    # A root runs whatever the edges into it say, unless those say it was skipped.
    skipped = () if isinstance(start_at, str) else tuple(
        n for n in roots if n in entering and not taken.get(n))
    for root in roots:
        taken.pop(root, None)
    sub = GraphPlan(None, tuple(n for n in roots if n not in skipped), in_count,
                    {n: tuple(e for e in plan.out_edges[n] if e[1] in downstream)
                     for n in downstream}, skipped)
    return sub, taken


#: The last compilation of each workflow object, with the state it was made from.
_compiled: dict[int, tuple[weakref.ref[Workflow], tuple[int, bytes], CompiledWorkflow]] = {}


def _state(model: BaseModel) -> tuple[Any, ...]:
    """Every field of ``model`` (and of the models it holds, directly or in a list or dict of
    them) as plain tuples, with its private attributes: what pickling the model itself would
    capture, at half the cost and without its growth with the graph (pydantic's
    ``__getstate__`` per model, and the memo of each nested model)."""
    kind = type(model)
    flat = _flat.get(kind)
    if flat is None:
        flat = _flat[kind] = not any(_may_hold_models(f.annotation)
                                     for f in kind.model_fields.values())
    if flat:
        return (kind, model.__pydantic_private__, *model.__dict__.values())
    values: list[Any] = [kind, model.__pydantic_private__]
    for value in model.__dict__.values():
        kind = type(value)
        if kind in _PLAIN:
            pass
        elif kind is dict:
            if value and _is_model(next(iter(value.values()))):
                value = [(key, _state(item)) for key, item in value.items()]
        elif kind is list:
            if value and _is_model(value[0]):
                value = [_state(item) for item in value]
        elif _is_model(value):
            value = _state(value)
        values.append(value)
    return tuple(values)


_PLAIN = frozenset({str, int, float, bool, type(None)})
#: Model classes none of whose fields can hold a model: their values are taken as they are.
_flat: dict[type[BaseModel], bool] = {}


def _may_hold_models(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_may_hold_models(arg) for arg in get_args(annotation))


def _is_model(value: Any) -> bool:
    # A type check, not isinstance(): pydantic's metaclass makes isinstance() slow.
    return hasattr(type(value), "__pydantic_fields__")


def compile_workflow(workflow: Workflow) -> CompiledWorkflow:
    """Validate and precompute ``workflow``; raises :class:`WorkflowError` with its problems.

    The result is reused while the workflow (every field of every node and edge) and the
    registered node types stay as they were: batch runs and the editor's re-runs skip the
    validation, which costs far more than the snapshot that checks for changes.
    """
    try:
        key = (registry.generation, pickle.dumps(_state(workflow), pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001 - a config holds something pickle cannot take
        return CompiledWorkflow(workflow)
    number = id(workflow)
    entry = _compiled.get(number)
    if entry is not None and entry[0]() is workflow and entry[1] == key:
        return entry[2]
    compiled = CompiledWorkflow(workflow)
    # Compiling looks the node types up, and a type's module loads and registers it on its
    # first lookup (a new generation): the compilation is of the registry as it is now, so
    # it is kept under that generation (else a process's first compilation is never reused).
    key = (registry.generation, key[1])

    def forget(ref: weakref.ref[Workflow], cache: dict[int, Any] = _compiled) -> None:
        # ``cache`` bound now: at interpreter exit the module's globals may be gone already.
        if cache.get(number, (None,))[0] is ref:
            del cache[number]

    _compiled[number] = (weakref.ref(workflow, forget), key, compiled)
    return compiled


__all__ = ["CompiledWorkflow", "GraphPlan", "compile_workflow", "rerun_plan"]
