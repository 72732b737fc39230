"""The editor widget's protocol, free of any widget import: what the graph looks like to the
browser, how the browser's semantic messages change a :class:`Workflow`, and how run events
become per-node status patches.

Every function here takes plain data, so the kernel side is tested without a browser.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cellwire.engine.events import (
    Event,
    NodeEvent,
    NodeException,
    NodeFailed,
    NodeFinished,
    NodePaused,
    NodeSkipped,
    NodeStarted,
    NodeStopped,
    NodeSucceeded,
)
from cellwire.model import FAIL_BRANCH, SOURCE, Node, Position, Workflow, registry
from cellwire.model.validate import validate
from cellwire.nodes.unsupported import NEEDS
from cellwire.services.trust import describe

if TYPE_CHECKING:
    from cellwire.engine import RunResult
    from cellwire.engine.run_state import RunState

#: Statuses the editor draws; "pending" until a run reaches the node.
STATUSES = ("pending", "running", "succeeded", "failed", "skipped", "paused", "cached")
SUMMARY_LENGTH = 80
VALUE_LENGTH = 300
_ID_CHARS = re.compile(r"[^A-Za-z0-9_\-]")
#: Node types a run (or a loop's round) ends at: nothing follows them, so no output handle.
TERMINAL = frozenset({"end", "loop-end"})


class EditRefused(ValueError):
    """An edit the workflow cannot take; the message says why, in words for the user."""


# -- workflow -> traits -----------------------------------------------------------------------


def handles_of(node: Node) -> list[str]:
    """The source handles ``node`` leaves through, named as the engine names them."""
    if node.type in TERMINAL:
        return []
    kind = registry.find(node.type)
    handles: list[str] = [SOURCE]
    if kind is not None and kind.handles is not None:
        try:
            handles = list(kind.handles(kind.config.model_validate(dict(node.config))))
        except Exception:  # noqa: BLE001 - a bad config has no branches yet; validate says why
            handles = []
    if node.error_strategy == FAIL_BRANCH and FAIL_BRANCH not in handles:
        handles.append(FAIL_BRANCH)
    return handles


def summary(node: Node) -> str:
    """One line about what the node does, from its config."""
    c = node.config
    text = ""
    if node.type == "llm":
        model = c.get("model") or {}
        prompt = c.get("prompt_template")
        first = ""
        if isinstance(prompt, list):
            users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
            first = str((users or prompt or [{}])[-1].get("text", "")) if prompt else ""
        elif isinstance(prompt, dict):
            first = str(prompt.get("text", ""))
        text = " · ".join(x for x in (str(model.get("name", "")), first) if x)
    elif node.type == "code":
        lines = [ln.strip() for ln in str(c.get("code", "")).splitlines() if ln.strip()]
        text = lines[0] if lines else ""
    elif node.type == "if-else":
        cases = c.get("cases") or []
        text = f"{len(cases)} case(s) + else"
    elif node.type == "http-request":
        text = f"{str(c.get('method', 'get')).upper()} {c.get('url', '')}"
    elif node.type == "start":
        names = [str(v.get("variable")) for v in c.get("variables") or [] if isinstance(v, dict)]
        text = ", ".join(names)
    elif node.type == "end":
        names = [str(v.get("variable")) for v in c.get("outputs") or [] if isinstance(v, dict)]
        text = ", ".join(names)
    elif node.type in ("iteration", "loop"):
        sel = c.get("iterator_selector") or c.get("break_conditions") or ""
        text = ".".join(sel) if isinstance(sel, list) and all(isinstance(s, str) for s in sel) \
            else ""
    if not text:
        for key in ("answer", "template", "query", "instruction", "url", "code"):
            if isinstance(c.get(key), str) and c[key].strip():
                text = c[key]
                break
    text = " ".join(text.split())
    return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 1] + "…"


def node_dict(node: Node) -> dict[str, Any]:
    """The browser's view of one node."""
    kind = registry.find(node.type)
    return {
        "id": node.id,
        "type": node.type,
        "title": node.title or node.id,
        "parent": node.parent,
        "position": node.position.model_dump() if node.position is not None else None,
        "config": node.config,
        "error_strategy": node.error_strategy,
        "handles": handles_of(node),
        "container": bool(kind and kind.container),
        "summary": summary(node),
    }


def edge_id(source: str, handle: str, target: str) -> str:
    return f"{source}:{handle}->{target}"


def node_tools(node: Node, tools: Any) -> list[dict[str, Any]]:
    """The tools ``node`` names (a tool node's, an agent's), as its panel lists them: each
    bound to the registered tool in ``tools`` (its key, kind, description and arguments),
    or with why none binds and how to register one."""
    from cellwire.nodes.tool import tool_references, unbound_fix

    out: list[dict[str, Any]] = []
    for ref in tool_references(node):
        entry: dict[str, Any] = {"name": ref.tool_name, "provider": ref.provider,
                                 "field": ref.field}
        found = tools.find(ref.tool_name, ref.provider)
        if found is None:
            entry.update(bound=None, problem=tools.why_unbound(ref.tool_name, ref.provider),
                         fix=unbound_fix(ref.tool_name, ref.provider))
        else:
            entry.update(bound=found.key, kind=found.kind,
                         description=short(found.description, SUMMARY_LENGTH * 2),
                         arguments=list(found.parameters.get("properties") or {}))
        out.append(entry)
    return out


def graph_traits(wf: Workflow) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(nodes, edges)`` as JSON lists; containers come before the nodes inside them. Tool
    and agent nodes carry their ``tools``, bound as a run of ``wf`` would bind them."""
    nodes = [node_dict(n) for n in _parents_first(wf)]
    if any(n["type"] in ("tool", "agent") for n in nodes):
        from cellwire.services.tools import default_registry, run_registry

        registry = run_registry(None, wf.tools) or default_registry()
        for entry in nodes:
            if entry["type"] in ("tool", "agent"):
                entry["tools"] = node_tools(wf.nodes[entry["id"]], registry)
    edges = [
        {"id": edge_id(e.source, e.source_handle, e.target), "source": e.source,
         "target": e.target, "source_handle": e.source_handle}
        for e in wf.edges
        if e.source in wf.nodes and e.target in wf.nodes
    ]
    return nodes, edges


def _parents_first(wf: Workflow) -> list[Node]:
    ordered: list[Node] = []
    seen: set[str] = set()

    def visit(container: str | None) -> None:
        for child in wf.children(container):
            if child.id not in seen:
                seen.add(child.id)
                ordered.append(child)
                visit(child.id)

    visit(None)
    # Nodes whose container is missing still show, at the top level.
    ordered += [n for n in wf.nodes.values() if n.id not in seen]
    return ordered


_palette: tuple[tuple[tuple[str, int], ...], list[dict[str, Any]]] | None = None


def node_type_list() -> list[dict[str, Any]]:
    """The palette: every registered type with its JSON Schema.

    Built once per set of registered types (JSON Schemas take pydantic ~0.2 s for all of
    them, which every editor opened would pay); registering a type builds it again.
    """
    global _palette
    kinds = [registry.get(name) for name in registry.names()]
    key = tuple((kind.name, id(kind)) for kind in kinds)
    if _palette is None or _palette[0] != key:
        _palette = (key, _build_palette(kinds))
    return copy.deepcopy(_palette[1])


def _build_palette(kinds: list[Any]) -> list[dict[str, Any]]:
    types = []
    for kind in kinds:
        try:
            schema = kind.json_schema()
        except Exception:  # noqa: BLE001 - a type whose schema cannot be built edits as JSON
            schema = {"type": "object"}
        types.append({"name": kind.name, "description": kind.description,
                      "container": kind.container,
                      "start": kind.start, "schema": schema, "needs": needs_of(kind)})
    return types


def needs_of(kind: Any) -> str | None:
    """What a node of ``kind`` needs to run that this install lacks (the placeholders of
    :mod:`cellwire.nodes.unsupported`, as ``cellwire import`` warns), or None."""
    if getattr(kind.run, "__module__", None) != "cellwire.nodes.unsupported":
        return None
    need, fix = NEEDS.get(kind.name, ("something this install lacks", "replace it"))
    return f"cannot run here: needs {need}; {fix}"


def problem_list(wf: Workflow) -> list[dict[str, Any]]:
    return [p.as_dict() for p in validate(wf)]


def trust_info(wf: Workflow) -> dict[str, Any]:
    """What the toolbar shows: trusted or not, the code nodes, and the sentence that says
    where they run and how to trust the file."""
    return {"trusted": wf.trusted, "origin": wf.origin, "code_nodes": wf.code_nodes(),
            "text": describe(wf)}


# -- messages -> workflow ---------------------------------------------------------------------


def check_connect(wf: Workflow, source: str, target: str, handle: str = SOURCE) -> None:
    """Raise :class:`EditRefused` unless ``source --handle--> target`` may be added."""
    for end in (source, target):
        if end not in wf.nodes:
            raise EditRefused(f"no node {end!r}")
    if source == target:
        raise EditRefused("a node cannot connect to itself")
    a, b = wf.nodes[source], wf.nodes[target]
    if a.parent != b.parent:
        raise EditRefused("both ends must be in the same container (or both outside)")
    if a.type in TERMINAL:
        raise EditRefused(f"{source!r} ({a.type}) ends the run: nothing runs after it")
    if handle not in handles_of(a):
        raise EditRefused(f"{source!r} has no handle {handle!r}; use one of {handles_of(a)}")
    if any(e.key == (source, handle, target) for e in wf.edges):
        raise EditRefused(f"{source} -> {target} is already connected")
    if source in reachable(wf, target):
        raise EditRefused(f"{source} -> {target} would make a cycle; to repeat steps, "
                          "put them in a loop node")


def reachable(wf: Workflow, start: str) -> set[str]:
    """Every node reachable from ``start`` along edges, ``start`` included."""
    out: dict[str, list[str]] = {}
    for e in wf.edges:
        out.setdefault(e.source, []).append(e.target)
    seen, todo = {start}, [start]
    while todo:
        for nxt in out.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def new_id(wf: Workflow, base: str) -> str:
    base = _ID_CHARS.sub("_", base)[:56] or "node"
    n = 1
    while f"{base}_{n}" in wf.nodes:
        n += 1
    return f"{base}_{n}"


def set_path(data: Any, path: str, value: Any) -> Any:
    """A deep copy of ``data`` with ``value`` at the dotted ``path`` (digits index lists);
    missing lists and dicts are made on the way, a text or number in the way is refused."""
    if not path:
        return value
    root = copy.deepcopy(data) if data is not None else {}
    parts = path.split(".")
    cur = root
    for i, part in enumerate(parts):
        if isinstance(cur, list):
            if not part.isdigit() or int(part) > len(cur):
                raise EditRefused(f"{path}: {part!r} is not an index of a list of {len(cur)}")
            key: Any = int(part)
            if key == len(cur):
                cur.append(None)
        elif isinstance(cur, dict):
            key = part
        else:
            raise EditRefused(f"{path}: cannot set {part!r} inside a {type(cur).__name__}")
        if i == len(parts) - 1:
            cur[key] = value
            break
        child = cur.get(key) if isinstance(cur, dict) else cur[key]
        if child is None:
            child = cur[key] = [] if parts[i + 1].isdigit() else {}
        cur = child
    return root


def _pos(value: Any) -> Position:
    try:
        return Position(x=float(value["x"]), y=float(value["y"]))
    except (KeyError, TypeError, ValueError):
        raise EditRefused(f"a position needs numbers x and y, got {value!r}") from None


NODE_FIELDS = ("title", "description", "error_strategy", "max_time")


def apply(wf: Workflow, msg: Mapping[str, Any]) -> str | None:
    """Apply one edit message to ``wf`` in place; returns the id of a node it created.

    Raises :class:`EditRefused` (nothing changed) when the edit is not allowed.
    """
    kind = msg.get("type")
    if kind == "connect":
        source, target = str(msg.get("source")), str(msg.get("target"))
        handle = str(msg.get("source_handle") or SOURCE)
        check_connect(wf, source, target, handle)
        wf.connect(source, target, handle)
    elif kind == "delete":
        for e in msg.get("edges") or []:
            wf.disconnect(str(e["source"]), str(e["target"]), e.get("source_handle") or SOURCE)
        for node_id in msg.get("nodes") or []:
            if node_id in wf.nodes:
                wf.remove_node(node_id)
    elif kind == "update_config":
        node = _node(wf, msg.get("id"))
        node.config = set_path(node.config, str(msg.get("path") or ""), msg.get("value"))
        if not isinstance(node.config, dict):
            raise EditRefused("a node's config must be an object")
    elif kind == "update_node":
        node = _node(wf, msg.get("id"))
        fields = {k: v for k, v in (msg.get("fields") or {}).items() if k in NODE_FIELDS}
        try:
            for key, value in fields.items():
                setattr(node, key, value)
        except ValueError as exc:
            raise EditRefused(" ".join(str(exc).split())[:300]) from None
    elif kind == "add_node":
        return _add(wf, msg)
    elif kind == "move":
        for node_id, pos in (msg.get("positions") or {}).items():
            if node_id in wf.nodes:
                wf.nodes[node_id].position = _pos(pos)
    elif kind == "paste":
        _paste(wf, msg)
    else:
        raise EditRefused(f"unknown edit {kind!r}")
    return None


def _node(wf: Workflow, node_id: Any) -> Node:
    if node_id not in wf.nodes:
        raise EditRefused(f"no node {node_id!r}")
    return wf.nodes[str(node_id)]


def _add(wf: Workflow, msg: Mapping[str, Any]) -> str:
    node_type = str(msg.get("node_type") or "")
    kind = registry.find(node_type)
    if kind is None:
        raise EditRefused(f"unknown node type {node_type!r}")
    parent = msg.get("parent")
    if parent is not None:
        container = wf.nodes.get(parent)
        found = registry.find(container.type) if container else None
        if found is None or not found.container:
            raise EditRefused(f"{parent!r} is not an iteration or loop")
    node_id = str(msg.get("id") or new_id(wf, kind.name.replace("-", "_")))
    if node_id in wf.nodes:
        raise EditRefused(f"there is already a node {node_id!r}")
    node = wf.add_node(node_id, kind.name, title=str(msg.get("title") or node_id), parent=parent,
                       **dict(msg.get("config") or {}))
    if msg.get("position") is not None:
        node.position = _pos(msg["position"])
    return node_id


def _paste(wf: Workflow, msg: Mapping[str, Any]) -> None:
    """Copies of ``nodes`` (browser node dicts) with new ids, and the edges among them."""
    renamed: dict[str, str] = {}
    offset = 40.0
    items = list(msg.get("nodes") or [])
    ids = {str(n.get("id")) for n in items}
    for item in items:
        kind = registry.find(str(item.get("type")))
        if kind is None:
            raise EditRefused(f"unknown node type {item.get('type')!r}")
    for item in items:
        old = str(item.get("id"))
        parent = item.get("parent")
        parent = renamed.get(parent, parent) if parent in ids else (
            parent if parent in wf.nodes else None)
        node_id = new_id(wf, old)
        node = wf.add_node(node_id, str(item["type"]), title=str(item.get("title") or node_id),
                           parent=parent, error_strategy=item.get("error_strategy") or "fail",
                           **copy.deepcopy(dict(item.get("config") or {})))
        pos = item.get("position")
        if isinstance(pos, Mapping):
            node.position = Position(x=float(pos.get("x", 0)) + offset,
                                     y=float(pos.get("y", 0)) + offset)
        renamed[old] = node_id
    for e in msg.get("edges") or []:
        if e.get("source") in renamed and e.get("target") in renamed:
            wf.connect(renamed[e["source"]], renamed[e["target"]], e.get("source_handle") or SOURCE)


# -- run events -> status patches --------------------------------------------------------------


def short(value: Any, limit: int = VALUE_LENGTH) -> str:
    from .display import short as _short

    return _short(value, limit)


def _values(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): short(v) for k, v in list(values.items())[:30]}


def status_patch(event: Event) -> dict[str, dict[str, Any]] | None:
    """The status change one run event makes, as ``{node_id: entry}``; None for run events.

    An entry has ``status`` and, once the node ends, ``elapsed``, ``tokens``, ``cost``,
    ``error``, and short ``inputs``/``outputs`` (the editor shows them for the selected node);
    a node paused for human input has its ``form``.
    Inside an iteration or loop the entry describes the latest round. A step of a node (an
    agent's model or tool call) is a ``steps`` entry of that node, not a node of its own.
    """
    if isinstance(event, NodeEvent) and is_step(event):
        if not isinstance(event, NodeFinished):
            return {}
        step: dict[str, Any] = {
            "step": event.round, "type": event.node_type, "title": event.title,
            "status": "failed" if isinstance(event, NodeFailed | NodeException) else "succeeded",
            "elapsed": round(event.elapsed, 4), "tokens": event.total_tokens,
            "output": short(event.outputs.get("text", event.outputs)),
        }
        if isinstance(event, NodeFailed | NodeException):
            step["error"] = short(event.error)
        return {str(event.parent_id): {"steps": [step]}}
    if isinstance(event, NodeStarted):
        return {event.node_id: {"status": "running", "started": event.time}}
    if isinstance(event, NodeSkipped):
        return {event.node_id: {"status": "skipped"}}
    if isinstance(event, NodeFinished):
        entry: dict[str, Any] = {
            "elapsed": round(event.elapsed, 4), "tokens": event.total_tokens,
            # JSON for the browser, which has no NaN: an unknown cost is None.
            "cost": None if math.isnan(event.cost) else event.cost,
            "inputs": _values(event.inputs),
            "outputs": _values(event.outputs),
        }
        if isinstance(event, NodeSucceeded):
            # The node cache ("cached") or the LLM response cache ("cache_hit") answered.
            cached = event.metadata.get("cached") or event.metadata.get("cache_hit")
            entry["status"] = "cached" if cached else "succeeded"
        elif isinstance(event, NodeException):
            entry.update(status="failed", error=event.error, handled=True)
        elif isinstance(event, NodeFailed):
            entry.update(status="failed", error=event.error)
        elif isinstance(event, NodeStopped):
            entry.update(status="failed", error=event.reason)
        elif isinstance(event, NodePaused):
            # The editor draws the form in the node's panel, to be answered there.
            entry.update(status="paused", form=event.form)
        else:
            entry["status"] = "succeeded"
        return {event.node_id: entry}
    return None


def run_summary(result: RunResult) -> dict[str, Any]:
    """How a run ended, for the editor's status line: status, time, tokens, cost, error."""
    cost = result.total_cost
    return {
        "run_id": result.run_id,
        "status": str(result.status),
        "elapsed_ms": round(result.elapsed_ms, 1),
        "tokens": result.total_tokens,
        # JSON for the browser, which has no NaN: an unknown cost is None.
        "cost": None if cost is None or math.isnan(cost) else cost,
        "error": result.error,
        "error_node": result.error_node,
        "ended_at": result.started_at + result.elapsed_ms / 1000 if result.started_at else None,
    }


def status_of(result: RunResult) -> dict[str, Any]:
    """The node statuses a finished run leaves, replayed from its events (an editor opened
    after the run shows them)."""
    status: dict[str, Any] = {}
    for event in result.events:
        patch = status_patch(event)
        if patch:
            status = merge_status(status, patch)
    if result.error_node and result.error_node not in status:
        status[result.error_node] = {"status": "failed", "error": result.error}
    return status


def unreached_inputs(wf: Workflow, node_id: str, state: RunState | None) -> str | None:
    """Why the top-level node ``node_id`` cannot run alone on the values of the run whose
    ``state`` this is (None when it can): each node with an edge into it must have finished or
    been skipped in that run, and at least one must have finished."""
    if state is None:
        return ("that run was read back from the store, which does not keep its values: "
                "run the whole workflow first")
    before = sorted({e.source for e in wf.edges if e.target == node_id})
    if not before:
        return None
    finished, skipped = state.finished(), state.skipped()
    missing = [n for n in before if n not in finished and n not in skipped]
    if missing:
        names = ", ".join(repr(n) for n in missing)
        return (f"the last run did not reach {names}, before {node_id!r}: run the whole "
                "workflow (or run from an earlier node) first")
    if not finished.intersection(before):
        return (f"the last run skipped every node before {node_id!r}, so it has no inputs: "
                "run the workflow on inputs that reach it first")
    return None


def is_step(event: NodeEvent) -> bool:
    """Whether the event is about a step of a node (``NodeContext.record_step``): its
    execution id is under its parent's."""
    parent = event.parent_execution_id
    return parent is not None and event.execution_id.startswith(parent + "/")


def merge_status(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with ``patch`` applied; a node's ``steps`` add up."""
    out = dict(current)
    for node_id, entry in patch.items():
        if entry.get("status") == "running":
            out[node_id] = dict(entry)
            continue
        old = out.get(node_id, {})
        merged = {**old, **entry}
        if "steps" in entry:
            merged["steps"] = [*old.get("steps", []), *entry["steps"]]
        out[node_id] = merged
    return out


def known_ids(nodes: Iterable[Mapping[str, Any]]) -> set[str]:
    return {str(n["id"]) for n in nodes}
