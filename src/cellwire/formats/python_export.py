"""Export as Python: a readable script on cellwire's public API that rebuilds a workflow.

Running the script defines ``wf``, a :class:`cellwire.Workflow` equal to the one exported.
"""

from __future__ import annotations

import keyword
import math
import pprint
from datetime import date, datetime
from typing import Any

from cellwire.model import Node, Retry, Workflow

#: ``add_node`` parameters a config key must not collide with.
_ADD_NODE_PARAMS = frozenset({"id", "type", "after", "title", "parent", "error_strategy",
                              "default_value", "retry", "max_time", "self"})


def export_python(workflow: Workflow, *, variable: str = "wf") -> str:
    """The Python source that rebuilds ``workflow`` into a variable named ``variable``."""
    lines = [f'"""{_docstring(workflow)}"""', "", "import cellwire", ""]
    header = {"mode": workflow.mode, "description": workflow.description}
    extras = {
        # A secret's value never reaches an export (the user grants it at run time).
        "environment": [{**v.model_dump(), "value": None} if v.value_type == "secret"
                        else v.model_dump() for v in workflow.environment],
        "conversation_variables": [v.model_dump() for v in workflow.conversation_variables],
        "features": workflow.features,
        "meta": workflow.meta,
    }
    args = [_lit(workflow.name)]
    args += [_kw(k, v) for k, v in header.items() if v]
    args += [_kw(k, v) for k, v in extras.items() if v]
    lines.append(f"{variable} = cellwire.Workflow(" + _join(args, 4) + ")")
    lines.append("")
    for node in _ordered(workflow):
        lines.extend(_node(node, variable))
    if workflow.edges:
        lines += ["", "# Edges, in order; the third argument is the branch handle."]
        for edge in workflow.edges:
            handle = "" if edge.source_handle == "source" else f", {_lit(edge.source_handle)}"
            lines.append(f"{variable}.connect({_lit(edge.source)}, {_lit(edge.target)}{handle})")
    canvas = [n for n in workflow.nodes.values() if n.position is not None or n.meta]
    if canvas or workflow.notes:
        lines += ["", "# Canvas: positions, notes and editor facts (they never change a run)."]
    for node in canvas:
        target = f"{variable}.nodes[{_lit(node.id)}]"
        if node.position is not None:
            lines.append(f"{target}.position = {_lit(node.position.model_dump())}")
        if node.meta:
            lines.append(f"{target}.meta = {_lit(node.meta, 4)}")
    if workflow.notes:
        notes = [n.model_dump(exclude_defaults=True) for n in workflow.notes]
        lines.append(f"{variable}.notes = {_lit(notes, 4)}")
    return "\n".join(lines) + "\n"


def _docstring(workflow: Workflow) -> str:
    text = f"{workflow.name}: a cellwire workflow, exported as Python."
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def _ordered(workflow: Workflow) -> list[Node]:
    """Nodes in a readable order: containers before their children, upstream first."""
    order: list[str] = []
    incoming = {n: [e.source for e in workflow.edges if e.target == n] for n in workflow.nodes}
    placed: set[str] = set()
    remaining = list(workflow.nodes)
    while remaining:
        progress = False
        for node_id in list(remaining):
            node = workflow.nodes[node_id]
            parent_ok = node.parent is None or node.parent in placed or \
                node.parent not in workflow.nodes
            ups_ok = all(u in placed or u not in workflow.nodes for u in incoming[node_id])
            if parent_ok and ups_ok:
                order.append(node_id)
                placed.add(node_id)
                remaining.remove(node_id)
                progress = True
        if not progress:  # a cycle: keep the file order for the rest
            order.extend(remaining)
            break
    return [workflow.nodes[n] for n in order]


def _node(node: Node, variable: str) -> list[str]:
    args = [_lit(node.id), _lit(node.type)]
    if node.title and node.title != node.id:
        args.append(f"title={_lit(node.title)}")
    if node.parent:
        args.append(f"parent={_lit(node.parent)}")
    if node.error_strategy != "fail":
        args.append(f"error_strategy={_lit(node.error_strategy)}")
    if node.default_value:
        args.append(_kw("default_value", node.default_value))
    if node.retry != Retry():
        args.append(_kw("retry", node.retry.model_dump(exclude_defaults=True)))
    if node.max_time is not None:
        args.append(f"max_time={node.max_time!r}")
    odd = {k: v for k, v in node.config.items()
           if k in _ADD_NODE_PARAMS or not k.isidentifier() or keyword.iskeyword(k)}
    args += [_kw(k, v) for k, v in node.config.items() if k not in odd]
    lines = [f"{variable}.add_node(" + _join(args, 4) + ")"]
    target = f"{variable}.nodes[{_lit(node.id)}]"
    if odd:
        lines.append(f"{target}.config.update({_lit(odd, 4)})")
    if node.title != (node.title or node.id):
        lines.append(f"{target}.title = {_lit(node.title)}")
    if node.description:
        lines.append(f"{target}.description = {_lit(node.description)}")
    return lines


def _kw(name: str, value: Any) -> str:
    return f"{name}={_lit(value, 4 + len(name) + 1)}"


def _join(args: list[str], indent: int) -> str:
    one_line = ", ".join(args)
    if len(one_line) < 80 and "\n" not in one_line:
        return one_line
    pad = " " * indent
    return "\n" + "".join(f"{pad}{a},\n" for a in args)


def _lit(value: Any, indent: int = 0) -> str:
    """A Python literal for ``value`` (data from YAML: dicts, lists, scalars)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, (datetime, date)) or _has_special(value):
        return _special(value)
    text = pprint.pformat(value, width=max(40, 96 - indent), sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def _has_special(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (datetime, date)) or isinstance(item, float) and not math.isfinite(item):
            return True
    return False


def _special(value: Any) -> str:
    # Dates and non-finite numbers have no literal: write the expression that rebuilds them.
    if isinstance(value, datetime):
        return f"__import__('datetime').datetime.fromisoformat({value.isoformat()!r})"
    if isinstance(value, date):
        return f"__import__('datetime').date.fromisoformat({value.isoformat()!r})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_special(k)}: {_special(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_special(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(f"{_special(v)}, " for v in value) + ")"
    return repr(value)
