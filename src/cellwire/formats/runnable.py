"""What in a workflow this install cannot run, and why: the node types it has only as
placeholders (not built here), tools no registered tool binds to (needs a tool binding), and
knowledge-retrieval nodes naming no knowledge base this machine has (needs a knowledge base).

Each is a warning: the workflow still loads, edits and exports, and a run fails at that node
with the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cellwire.model import Problem, Workflow

#: The reasons :func:`cannot_run` gives, by kind.
NOT_BUILT = "not built here"
NEEDS_TOOL = "needs a tool binding"
NEEDS_KNOWLEDGE = "needs a knowledge base"


def cannot_run(workflow: Workflow, knowledge: Any = None) -> list[tuple[Problem, str]]:
    """``(warning, reason)`` for each node (or tool of a node) that cannot run here; reason
    is one of :data:`NOT_BUILT`, :data:`NEEDS_TOOL`, :data:`NEEDS_KNOWLEDGE`. ``knowledge``:
    the knowledge service to look bases up in (the default one when None)."""
    from cellwire.nodes.unsupported import need

    found: list[tuple[Problem, str]] = []
    for node in workflow.nodes.values():
        needed = need(node)
        if needed is not None:
            found.append((Problem(node.id, "type", f"{node.type} node '{node.title}' cannot "
                                  f"run here: it needs {needed[0]}", needed[1], "warning"),
                          NOT_BUILT))
    # Only tool and agent nodes bind tools: other workflows skip the tool stack (httpx, MCP).
    if any(node.type in ("tool", "agent") for node in workflow.nodes.values()):
        from cellwire.nodes.tool import tool_problems

        # An agent v2 node (a Dify 1.16 Agent package) is a kind of node cellwire lacks, not
        # a tool.
        found.extend((problem, NOT_BUILT if problem.field == "agent_binding" else NEEDS_TOOL)
                     for problem in tool_problems(workflow))
    found.extend((problem, NEEDS_KNOWLEDGE) for problem in _knowledge_problems(workflow,
                                                                              knowledge))
    return found


def unrunnable_types(workflow: Workflow, knowledge: Any = None) -> dict[str, list[str]]:
    """Each node type the workflow uses that cannot run here, with its reasons."""
    types: dict[str, list[str]] = {}
    for problem, reason in cannot_run(workflow, knowledge):
        node = workflow.nodes.get(problem.node_id or "")
        if node is not None and reason not in types.setdefault(node.type, []):
            types[node.type].append(reason)
    return types


def _knowledge_problems(workflow: Workflow, knowledge: Any) -> list[Problem]:
    nodes = [n for n in workflow.nodes.values() if n.type == "knowledge-retrieval"]
    if not nodes:
        return []
    if knowledge is None:
        from cellwire.services.knowledge import Knowledge

        knowledge = Knowledge()
    try:
        known = set()
        for base in knowledge.list():
            known |= {base.name, base.id, *base.meta.get("aliases", [])}
    except (OSError, ValueError):  # an unreadable folder: the run will say what is wrong
        return []
    problems = []
    for node in nodes:
        config = node.config if isinstance(node.config, Mapping) else {}
        datasets = [str(d) for d in config.get("dataset_ids") or [] if d]
        missing = [d for d in datasets if d not in known]
        if not datasets or missing:
            named = ", ".join(missing) if missing else "no knowledge base"
            problems.append(Problem(
                node.id, "dataset_ids", f"knowledge-retrieval node '{node.title or node.id}' "
                f"cannot run here: no knowledge base here is named or bound to {named}",
                "create one (cellwire kb create NAME, then cellwire kb add NAME FILES) and "
                f"bind the dataset id to it (cellwire kb bind NAME {missing[0] if missing else 'ID'})",
                "warning"))
    return problems
