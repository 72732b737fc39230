"""Node fingerprints: what a node's result depends on, hashed.

A node's fingerprint covers its type (and the code that runs it), its config as the engine
parsed it, its retry policy, time limit and error strategy, the run-wide model override when
the node calls a model, the declarations of the environment and conversation variables it
reads, whether the workflow is trusted (where its code runs), and the fingerprints of the nodes it depends on: the sources of its incoming edges
(with the handle they leave through), the nodes its selectors and templates reference, and,
for an iteration or loop, the nodes inside it. An edit anywhere upstream therefore changes
every fingerprint downstream, while an edit of an unrelated node, or of what never changes a
run (title, position, editor metadata), changes none.

Stale tracking compares them with those of the last run; the node cache keys a node's result
by its fingerprint and the values it read (:func:`cache_key`).
"""

from __future__ import annotations

import hashlib
import json
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from cellwire.model.selectors import Selector
from cellwire.model.validate import node_references

if TYPE_CHECKING:
    from .plan import CompiledWorkflow

class Unkeyable(TypeError):
    """A value has no stable digest (an object that is not plain data): it is not cached."""


def digest(value: Any, *, strict: bool = False) -> str:
    """The SHA-256 of ``value`` in canonical JSON (sorted keys). Callables count by their
    code; other objects that are not plain data raise :class:`Unkeyable` when ``strict``,
    else count by their type and ``repr`` (which may differ every time: never a false
    match)."""

    def encode(obj: Any) -> Any:
        if isinstance(obj, BaseModel):
            return obj.model_dump()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=repr)
        if isinstance(obj, (bytes, bytearray)):
            return "bytes:" + hashlib.sha256(obj).hexdigest()
        if isinstance(obj, tuple):
            return list(obj)
        if callable(obj):
            return "callable:" + _callable_digest(obj)
        if strict:
            raise Unkeyable(f"{type(obj).__name__} is not plain data")
        return f"{type(obj).__module__}.{type(obj).__qualname__}:{obj!r}"

    text = json.dumps(value, sort_keys=True, default=encode, separators=(",", ":"),
                      allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _callable_digest(fn: Any) -> str:
    """A callable by name and by code, so redefining a function in a cell changes it."""
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    code = getattr(fn, "__code__", None)
    if code is None:
        return name
    h = hashlib.sha256(name.encode())
    _hash_code(h, code)
    return h.hexdigest()


def _hash_code(h: Any, code: types.CodeType) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _hash_code(h, const)  # a nested function: its repr holds an address
        else:
            h.update(repr(const).encode())


def node_reads(compiled: CompiledWorkflow, node_id: str) -> tuple[Selector, ...]:
    """The selectors ``node_id`` reads (config, type-specific fields, Jinja templates)."""
    node = compiled.nodes[node_id]
    found = node_references(node.config, compiled.types.get(node_id),
                            compiled.configs.get(node_id))
    return tuple(dict.fromkeys(tuple(s) for _, s, _ in found
                               if len(s) >= 2 and all(isinstance(p, str) for p in s)))


def fingerprints(compiled: CompiledWorkflow, model: str | None = None) -> dict[str, str]:
    """The fingerprint of every node of ``compiled`` (see the module), for runs whose
    model override is ``model``."""
    own = {n: _own(compiled, n, model) for n in compiled.nodes}
    incoming: dict[str, set[tuple[str, str, str]]] = {n: set() for n in compiled.nodes}
    for edge in compiled.workflow.edges:
        if edge.source in compiled.nodes and edge.target in compiled.nodes:
            incoming[edge.target].add(("edge", edge.source, edge.source_handle))
    deps = {n: sorted(_dependencies(compiled, n, incoming[n])) for n in compiled.nodes}
    done: dict[str, str] = {}
    busy: set[str] = set()
    for root in sorted(compiled.nodes):
        if root in done:
            continue
        stack: list[tuple[str, Iterator[tuple[str, str, str]]]] = [(root, iter(deps[root]))]
        busy.add(root)
        while stack:
            node_id, todo = stack[-1]
            for _, dep, _ in todo:
                if dep not in done and dep not in busy:
                    busy.add(dep)
                    stack.append((dep, iter(deps[dep])))
                    break
            else:
                stack.pop()
                busy.discard(node_id)
                h = hashlib.sha256(own[node_id].encode())
                for kind, dep, handle in deps[node_id]:
                    # A dependency still in progress closes a loop of references (an invalid
                    # workflow): it adds nothing rather than recursing forever.
                    if dep in done:
                        h.update(f"|{kind}:{dep}:{handle}:{done[dep]}".encode())
                done[node_id] = h.hexdigest()
    return done


def _dependencies(compiled: CompiledWorkflow, node_id: str,
                  found: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
    """What ``node_id`` depends on besides ``found``, its incoming edges."""
    workflow = compiled.workflow
    nodes = compiled.nodes
    ancestors = _ancestors(compiled, node_id)
    for selector in compiled.reads(node_id):
        head = selector[0]
        # A child reads its container's item and index: the container's own inputs reach
        # the child through the container, which depends on its children.
        if head in nodes and head != node_id and head not in ancestors:
            found.add(("ref", head, ""))
    if compiled.types[node_id].container:
        found |= {("child", child.id, "") for child in workflow.children(node_id)}
    return found


def _ancestors(compiled: CompiledWorkflow, node_id: str) -> set[str]:
    seen: set[str] = set()
    parent = compiled.nodes[node_id].parent
    while parent is not None and parent in compiled.nodes and parent not in seen:
        seen.add(parent)
        parent = compiled.nodes[parent].parent
    return seen


def _own(compiled: CompiledWorkflow, node_id: str, model: str | None) -> str:
    node = compiled.nodes[node_id]
    node_type = compiled.types[node_id]
    config = compiled.configs.get(node_id, node.config)
    reads = compiled.reads(node_id)
    workflow = compiled.workflow
    env = {v.name: v for v in workflow.environment}
    conversation = {v.name: v for v in workflow.conversation_variables}
    declared = {
        f"{head}.{var}": _declaration(table[var])
        for head, var, *_ in reads
        for table in ((env if head == "env" else conversation if head == "conversation"
                       else None),)
        if table is not None and var in table
    }
    return digest({
        "type": node.type,
        "run": _callable_digest(node_type.run),
        "config": config,
        "parent": node.parent,
        "retry": node_type.retry_for(node),
        "max_time": node.max_time,
        "error_strategy": node.error_strategy,
        "default_value": node.default_value,
        "model": model if _calls_model(node.config) else None,
        "declared": declared,
        # Trusting a workflow moves its code out of the sandbox and widens its network.
        "trusted": workflow.trusted,
    })


def _calls_model(config: Mapping[str, Any]) -> bool:
    return isinstance(config.get("model"), Mapping)


def _declaration(variable: Any) -> dict[str, Any]:
    # A secret's value is granted per run: its declaration counts, never its value.
    data = variable.model_dump()
    if data.get("value_type") == "secret":
        data.pop("value", None)
    return dict(data)


def cache_key(fingerprint: str, reads: Sequence[Selector],
              get: Callable[[Selector], Any]) -> str | None:
    """The node cache's key for a node with ``fingerprint`` reading ``reads`` (``get``
    returns a selector's value, None when missing); None when a value read is not plain data
    (a file object, a DataFrame): such a node is not cached. Granted secrets count by
    their digest, kept in memory only like the key itself."""
    try:
        values = digest([[list(s), get(s)] for s in reads], strict=True)
    except (Unkeyable, ValueError):
        return None
    return hashlib.sha256(f"{fingerprint}:{values}".encode()).hexdigest()


__all__ = ["Unkeyable", "cache_key", "digest", "fingerprints", "node_reads"]
