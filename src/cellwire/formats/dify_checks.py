"""Checks Dify's editor makes before it publishes a workflow, beyond cellwire's own validation.

These catch files that load but cannot behave as their author meant. Errors: ids given twice
in a branch node's list (its edges are ambiguous), a list operator limited to zero items.
Warnings (Dify imports the file and runs it): a branch of a workflow app that leads nowhere
(a run taking it ends there, with no outputs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cellwire.model import Problem, Workflow

#: For each branching type: the config list holding its branches and the key of each id.
BRANCH_LISTS = {
    "if-else": ("cases", "case_id"),
    "question-classifier": ("classes", "id"),
    "human-input": ("user_actions", "id"),
}


def dify_problems(workflow: Workflow) -> list[Problem]:
    """Every problem these checks find in ``workflow``."""
    return [*_duplicate_branches(workflow), *_dead_branches(workflow), *_list_limits(workflow)]


def _branch_ids(node_type: str, config: Mapping[str, Any]) -> list[Any]:
    key_list, key = BRANCH_LISTS[node_type]
    items = config.get(key_list)
    if not isinstance(items, list):
        return []
    return [item.get(key) for item in items if isinstance(item, Mapping)]


def _duplicate_branches(workflow: Workflow) -> Iterator[Problem]:
    for node in workflow.nodes.values():
        if node.type not in BRANCH_LISTS:
            continue
        key_list, key = BRANCH_LISTS[node.type]
        seen: set[Any] = set()
        for index, value in enumerate(_branch_ids(node.type, node.config)):
            if not isinstance(value, (str, int)):
                yield Problem(node.id, f"{key_list}[{index}].{key}",
                              f"{key} must be text, got {type(value).__name__}",
                              f"give each entry of {key_list} a text {key}")
                continue
            if value in seen:
                yield Problem(node.id, f"{key_list}[{index}].{key}",
                              f"{key} {value!r} is given twice, so its edges are ambiguous",
                              f"give each entry of {key_list} its own {key}")
            seen.add(value)


def _dead_branches(workflow: Workflow) -> Iterator[Problem]:
    # In a chatflow a branch may end the turn on purpose; a workflow app must reach an End.
    if workflow.mode != "workflow":
        return
    taken = {(e.source, e.source_handle) for e in workflow.edges}
    for node in workflow.nodes.values():
        if node.type not in BRANCH_LISTS or node.type == "human-input":
            continue
        handles = [str(h) for h in _branch_ids(node.type, node.config) if h is not None]
        if node.type == "if-else":
            handles.append("false")
        for handle in handles:
            if (node.id, handle) not in taken:
                label = "the else branch ('false')" if handle == "false" else f"branch {handle!r}"
                key_list = BRANCH_LISTS[node.type][0]
                yield Problem(node.id, f"{key_list}.{handle}" if handle != "false" else "false",
                              f"{label} leads nowhere: a run taking it ends there, with no "
                              "outputs (as in Dify)",
                              f"connect {label} to a node (e.g. an End node)", "warning")


def _list_limits(workflow: Workflow) -> Iterator[Problem]:
    for node in workflow.nodes.values():
        if node.type != "list-operator":
            continue
        limit = node.config.get("limit")
        if isinstance(limit, Mapping) and limit.get("enabled"):
            size = limit.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                yield Problem(node.id, "limit.size", f"the limit is enabled with size {size!r}",
                              "set limit.size to 1 or more, or disable the limit")
