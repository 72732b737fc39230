"""Static checks of a workflow. Each problem names the node, the field and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .problems import Problem, WorkflowError
from .registry import NodeType, registry
from .selectors import RESERVED_PREFIXES, Selector, dify_references, jinja_references
from .workflow import FAIL_BRANCH, SOURCE, Workflow

#: System variables a run provides (Dify's names).
SYSTEM_VARIABLES = frozenset(
    {
        "query", "files", "conversation_id", "user_id", "dialogue_count", "app_id",
        "workflow_id", "workflow_run_id", "timestamp", "invoke_from",
    }
)

# Config fields that hold code or free text whose braces are not template references.
_NOT_TEMPLATES = frozenset({"code", "desc", "description", "title", "instruction_schema"})


def validate(workflow: Workflow, inputs: Mapping[str, Any] | None = None) -> list[Problem]:
    """Every problem in ``workflow``; with ``inputs``, also missing required start inputs."""
    return validate_configs(workflow, inputs)[0]


def validate_configs(workflow: Workflow, inputs: Mapping[str, Any] | None = None
                     ) -> tuple[list[Problem], dict[str, Any]]:
    """:func:`validate`, also returning the parsed config of every node that has a valid one
    (so the engine does not parse them twice)."""
    problems, types, configs = _parse_nodes(workflow)
    problems.extend(_check_containment(workflow, types))
    problems.extend(_check_edges(workflow, types, configs))
    problems.extend(_check_cycles(workflow))
    problems.extend(_check_reachability(workflow, types))
    problems.extend(_check_references(workflow, types, configs))
    if inputs is not None:
        problems.extend(missing_inputs(workflow, inputs))
    return problems, configs


def reference_problems(workflow: Workflow, node_id: str) -> list[Problem]:
    """What ``node_id`` refers to that does not exist (a node, an output, a variable), each
    with the closest existing name: what a notebook cell warns about when it runs."""
    _, types, configs = _parse_nodes(workflow)
    return [p for p in _check_references(workflow, types, configs) if p.node_id == node_id]


def _parse_nodes(workflow: Workflow
                 ) -> tuple[list[Problem], dict[str, NodeType], dict[str, Any]]:
    problems: list[Problem] = []
    types: dict[str, NodeType] = {}
    configs: dict[str, Any] = {}
    for key, node in workflow.nodes.items():
        if key != node.id:
            problems.append(
                Problem(key, "id", f"is stored under {key!r} but says its id is {node.id!r}",
                        "give every node one id")
            )
        if node.id in RESERVED_PREFIXES:
            problems.append(
                Problem(node.id, "id", f"{node.id!r} is reserved for {node.id}.* variables",
                        "rename the node")
            )
        node_type = registry.find(node.type)
        if node_type is None:
            problems.append(
                Problem(node.id, "type", f"unknown node type {node.type!r}",
                        f"use one of {', '.join(registry.names())}, or register it with "
                        "@cellwire.node_type")
            )
            continue
        types[node.id] = node_type
        try:
            configs[node.id] = node_type.parse_config(node.id, node.config)
        except WorkflowError as exc:
            problems.extend(exc.problems)
    return problems, types, configs


def duplicate_ids(ids: list[str]) -> list[Problem]:
    """Problems for ids given more than once (loaders call this before building a Workflow)."""
    seen: set[str] = set()
    problems = []
    for node_id in ids:
        if node_id in seen:
            problems.append(Problem(node_id, "id", "the id is used by more than one node",
                                    "give each node its own id"))
        seen.add(node_id)
    return problems


def missing_inputs(workflow: Workflow, inputs: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for node in workflow.children(None):
        if node.type != "start":
            continue
        for var in node.config.get("variables") or []:
            name = var.get("variable")
            if var.get("required") and name not in inputs and var.get("default") in (None, ""):
                problems.append(
                    Problem(node.id, f"variables.{name}", f"the required input {name!r} is missing",
                            f"pass it, e.g. {name}=... or --input {name}=...")
                )
    return problems


def unknown_inputs(workflow: Workflow, inputs: Mapping[str, Any]) -> list[Problem]:
    """Inputs the start node does not declare (``sys.*`` values aside), each with the closest
    declared name: a misspelt input would otherwise run as a missing one, silently."""
    starts = [node for node in workflow.children(None) if node.type == "start"]
    if not starts:
        return []
    declared = [str(var["variable"]) for node in starts
                for var in node.config.get("variables") or []
                if isinstance(var, Mapping) and var.get("variable")]
    problems = []
    for name in inputs:
        if name.startswith("sys.") or name in declared:
            continue
        hint = ((_closest(name, declared)
                 or f"the start node declares {', '.join(map(repr, declared))}") if declared
                else "the start node declares no inputs: add the variable to it")
        problems.append(Problem(starts[0].id, f"variables.{name}",
                                f"unknown input {name!r}", hint))
    return problems


def _check_containment(workflow: Workflow, types: dict[str, NodeType]) -> Iterator[Problem]:
    for node in workflow.nodes.values():
        if node.parent is None:
            continue
        parent = workflow.nodes.get(node.parent)
        if parent is None:
            yield Problem(node.id, "parent", f"its container {node.parent!r} does not exist",
                          "add the iteration or loop, or clear 'parent'")
        elif parent.id in types and not types[parent.id].container:
            yield Problem(node.id, "parent", f"{parent.id!r} is a {parent.type}, not a container",
                          "only iteration and loop nodes hold other nodes")


def _handles(node_id: str, workflow: Workflow, types: dict[str, NodeType], configs: dict) -> set[str]:
    node = workflow.nodes[node_id]
    node_type = types.get(node_id)
    if node_type is not None and node_type.handles is not None and node_id in configs:
        handles = set(node_type.handles(configs[node_id]))
    else:
        handles = {SOURCE}
    if node.error_strategy == "fail-branch":
        handles |= {SOURCE, FAIL_BRANCH}
    return handles


def _check_edges(workflow: Workflow, types: dict[str, NodeType], configs: dict) -> Iterator[Problem]:
    seen: set[tuple[str, str, str]] = set()
    for edge in workflow.edges:
        where = f"edges[{edge.source}->{edge.target}]"
        missing = [end for end in (edge.source, edge.target) if end not in workflow.nodes]
        if missing:
            yield Problem(missing[0], where, f"the edge points to node {missing[0]!r}, which does "
                          "not exist", "remove the edge or add the node")
            continue
        if edge.key in seen:
            yield Problem(edge.source, where, "the same edge is given twice", "remove one",
                          level="warning")
        seen.add(edge.key)
        source, target = workflow.nodes[edge.source], workflow.nodes[edge.target]
        if source.parent != target.parent:
            yield Problem(edge.target, where, "the edge crosses the border of an iteration or loop",
                          "connect nodes inside a container only to each other")
        if edge.source in configs or edge.source not in types:
            handles = _handles(edge.source, workflow, types, configs)
            if edge.source in types and edge.source_handle not in handles:
                yield Problem(edge.source, f"{where}.source_handle",
                              f"handle {edge.source_handle!r} matches no case of this "
                              f"{source.type} node", f"use one of {sorted(handles)}")


def _adjacency(workflow: Workflow) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for n in workflow.nodes}
    for e in workflow.edges:
        if e.source in out and e.target in workflow.nodes:
            out[e.source].append(e.target)
    return out


def _check_cycles(workflow: Workflow) -> Iterator[Problem]:
    out = _adjacency(workflow)
    colour: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in out:
        if root in colour:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(out[root]))]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
            elif colour.get(child) == 1:
                path = [n for n, _ in stack]
                cycle = path[path.index(child):] + [child]
                yield Problem(child, "edges", f"cycle {' -> '.join(cycle)}",
                              "remove an edge of the cycle; to repeat steps, put them in a "
                              "loop node")
            elif child not in colour:
                colour[child] = 1
                stack.append((child, iter(out[child])))


def graph_roots(workflow: Workflow, container: str | None, types: Mapping[str, Any]) -> list[str]:
    """Where a graph level starts: its start node, or every node with no incoming edge."""
    members = [n.id for n in workflow.children(container)]
    starts = [n for n in members if getattr(types.get(n), "start", False)]
    if starts:
        return starts[:1]
    targets = {e.target for e in workflow.edges}
    return [n for n in members if n not in targets]


def _check_reachability(workflow: Workflow, types: dict[str, NodeType]) -> Iterator[Problem]:
    out = _adjacency(workflow)
    for container in [None, *(n.id for n in workflow.nodes.values() if n.id in types and
                                types[n.id].container)]:
        members = {n.id for n in workflow.children(container)}
        if not members:
            continue
        roots = graph_roots(workflow, container, types)
        if not roots:
            continue
        seen, todo = set(roots), list(roots)
        while todo:
            for nxt in out[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        for node_id in sorted(members - seen):
            yield Problem(node_id, None, f"unreachable from {roots[0]!r}; it will be skipped",
                          f"connect it after another node, e.g. after={roots[0]!r}",
                          level="warning")


def config_references(config: Any, path: str = "") -> Iterator[tuple[str, Selector, bool]]:
    """``(field, selector, strict)`` for each reference in a raw config.

    Selector fields and Dify ``{{#..#}}`` references are strict: they must resolve. Text is
    plain, as in Dify: a ``{{ name }}`` there is literal (jinja2-mode fields are
    :func:`jinja_field_references`).
    """
    if isinstance(config, Mapping):
        for key, value in config.items():
            field = f"{path}.{key}" if path else str(key)
            if key in _NOT_TEMPLATES:
                continue
            if str(key).endswith("selector") and _is_selector(value):
                yield field, tuple(value), True
            else:
                yield from config_references(value, field)
    elif isinstance(config, list):
        for index, item in enumerate(config):
            yield from config_references(item, f"{path}[{index}]")
    elif isinstance(config, str) and "{{#" in config:
        for selector in dify_references(config):
            yield path, selector, True


def jinja_field_references(fields: Iterable[tuple[str, str]]
                           ) -> Iterator[tuple[str, Selector, bool]]:
    """``(field, selector, False)`` for each ``{{ a.b }}`` in jinja2-mode fields.

    They are checked only when ``a`` is a node id, since ``a`` may be a variable the
    template defines itself.
    """
    for field, text in fields:
        for selector in jinja_references(text):
            yield field, selector, False


def node_references(raw: Any, node_type: NodeType | None, config: Any
                    ) -> Iterator[tuple[str, Selector, bool]]:
    """``(field, selector, strict)`` for every variable a node reads: references in its raw
    config, its type's own reference fields (as given: a part may be something other than a
    name, and a selector may be too short) and its Jinja fields. ``config`` is the parsed
    config (None when it did not parse: only the raw references are known then)."""
    yield from config_references(raw)
    if node_type is None or config is None:
        return
    if node_type.references is not None:
        for field, selector in node_type.references(config):
            yield field, tuple(selector), True
    if node_type.jinja is not None:
        yield from jinja_field_references(node_type.jinja(config))


def _is_selector(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 2 and all(isinstance(p, str) for p in value)


def _check_references(workflow: Workflow, types: dict[str, NodeType], configs: dict) -> Iterator[Problem]:
    env = {v.name for v in workflow.environment}
    conversation = {v.name for v in workflow.conversation_variables}
    declared: dict[str, Any] = {}
    for node_id, config in configs.items():
        declared[node_id] = types[node_id].outputs(config)
    for node in workflow.nodes.values():
        found: list[tuple[str, Selector, bool]] = []
        for field, selector, strict in node_references(
                node.config, types.get(node.id), configs.get(node.id)):
            # A node type's own reference fields may hold any list (an assigner's value).
            if not all(isinstance(part, str) for part in selector):
                yield Problem(node.id, field, f"{list(selector)!r} is not a variable "
                              "reference: its parts must all be names",
                              "write the reference as [node_id, output], e.g. "
                              "['start', 'query'], or give a constant value instead")
            elif len(selector) >= 2:
                found.append((field, selector, strict))
        for field, selector, strict in found:
            head, var = selector[0], selector[1]
            if head == "sys":
                if var not in SYSTEM_VARIABLES:
                    yield Problem(node.id, field, f"unknown system variable sys.{var}",
                                  f"use one of {', '.join(sorted(SYSTEM_VARIABLES))}")
            elif head == "env":
                if var not in env:
                    yield Problem(node.id, field, f"environment variable {var!r} is not declared",
                                  "declare it in the workflow's environment")
            elif head == "conversation":
                if var not in conversation:
                    yield Problem(node.id, field, f"conversation variable {var!r} is not declared",
                                  "declare it in the workflow's conversation variables")
            elif head not in workflow.nodes:
                if strict:
                    yield Problem(node.id, field, f"refers to node {head!r}, which does not exist",
                                  _closest(head, workflow.nodes) or
                                  "point the reference at an existing node's output")
            else:
                outputs = declared.get(head)
                if outputs is not None and var not in outputs:
                    known = ", ".join(sorted(outputs)) or "nothing"
                    yield Problem(node.id, field, f"node {head!r} has no output {var!r}",
                                  _closest(var, outputs) or
                                  f"it outputs {known}")


def _closest(name: str, names: Iterable[str]) -> str:
    """"did you mean 'x'?" for the name closest to a misspelt ``name``, or "" when none is."""
    close = difflib.get_close_matches(name, list(names), n=1)
    return f"did you mean {close[0]!r}?" if close else ""
