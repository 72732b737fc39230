"""Dify DSL export: a Workflow as a document Dify's import accepts, in DSL 0.7.0 (what Dify
1.16 writes) or 0.6.0 (Dify 1.15 and before hold a newer file as pending until a user
confirms it: ``api/services/dsl_version.py``).

What the import moved to ``meta['dify']`` (canvas sizes, wrapper types, app icon, variable
ids) goes back where it came from; containment flags and edge ids are regenerated the way
Dify writes them. Secret environment values are always written empty.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from cellwire.model import Node, Note, Problem, Retry, Workflow, WorkflowError

from .dify_import import (
    APP_DEFAULTS,
    JSON_DEFAULT_TYPES,
    NOTE_DEFAULTS,
    NOTE_TYPE,
    WRAPPER_TYPES,
    canonical_retry_config,
    mention_selector,
    retry_from_dify,
    stable_id,
)

#: What Dify 1.16 writes (``api/constants/dsl_version.py``: CURRENT_APP_DSL_VERSION).
DSL_VERSION = "0.7.0"
#: The versions an export can target, oldest first: 0.6.0 is Dify 1.15's.
DSL_VERSIONS = ("0.6.0", "0.7.0")
#: Top-level keys 0.7.0 added (portable Agent packages); an older Dify cannot import them.
AGENT_KEYS = ("agent", "agent_packages")
#: Dify's z-index for nodes and edges inside an iteration or loop.
CHILD_Z_INDEX = 1002


def export_dify(workflow: Workflow, version: str = DSL_VERSION) -> dict[str, Any]:
    """The Dify DSL document of ``workflow``, as plain data, in DSL ``version`` (one of
    :data:`DSL_VERSIONS`). Raises ``ValueError`` for another version and
    :class:`WorkflowError` when the workflow uses what ``version`` cannot express."""
    if version not in DSL_VERSIONS:
        raise ValueError(f"cannot write Dify DSL {version!r}: the versions cellwire writes are "
                         f"{', '.join(DSL_VERSIONS)} (0.7.0 for Dify 1.16, 0.6.0 for Dify 1.15 "
                         "and before)")
    meta = dict(workflow.meta.get("dify") or {})
    if version == "0.6.0":
        _check_before_agents(workflow, meta)
    app = {"name": workflow.name, "mode": workflow.mode, "description": workflow.description,
           **APP_DEFAULTS, **(meta.get("app") or {})}
    graph: dict[str, Any] = {
        "nodes": [*(_node(n, workflow) for n in workflow.nodes.values()),
                  *(_note(n) for n in workflow.notes)],
        "edges": [_edge(e.source, e.source_handle, e.target, workflow) for e in workflow.edges],
        **(meta.get("graph") or {}),
    }
    body: dict[str, Any] = {
        "conversation_variables": _conversation(workflow, meta.get("conversation_ids") or {}),
        "environment_variables": _environment(workflow, meta.get("environment_ids") or {}),
        "features": dict(workflow.features),
        "graph": graph,
        **(meta.get("workflow") or {}),
    }
    document = {"version": version, "kind": meta.get("kind", "app"), "app": app,
                "dependencies": [], **(meta.get("document") or {}), "workflow": body}
    return document


def dump_dify(workflow: Workflow, version: str = DSL_VERSION) -> str:
    """``workflow`` as Dify DSL YAML text (see :func:`export_dify`)."""
    return yaml.safe_dump(export_dify(workflow, version), allow_unicode=True, sort_keys=False,
                          default_flow_style=False, width=100)


def _check_before_agents(workflow: Workflow, meta: dict[str, Any]) -> None:
    """DSL 0.6.0 has no Agent packages: a workflow that uses them cannot target it."""
    problems = [Problem(node.id, "agent_binding", "an agent v2 node (a Dify 1.16 Agent "
                        "package) cannot be written as DSL 0.6.0",
                        "export as 0.7.0 for Dify 1.16, or replace the node")
                for node in workflow.nodes.values()
                if node.type == "agent" and isinstance(node.config, dict)
                and node.config.get("agent_binding") is not None]
    document = meta.get("document") or {}
    problems += [Problem(None, key, f"'{key}' (Agent packages) is new in DSL 0.7.0",
                         "export as 0.7.0 for Dify 1.16")
                 for key in AGENT_KEYS if key in document]
    if problems:
        raise WorkflowError(problems, f"workflow {workflow.name!r} cannot be written as "
                            "Dify DSL 0.6.0")


def _containment(node: Node | None, workflow: Workflow) -> dict[str, Any]:
    parent = workflow.nodes.get(node.parent) if node is not None and node.parent else None
    if parent is None:
        return {}
    if parent.type == "loop":
        return {"isInLoop": True, "loop_id": parent.id}
    return {"isInIteration": True, "iteration_id": parent.id}


def _node(node: Node, workflow: Workflow) -> dict[str, Any]:
    meta = dict(node.meta.get("dify") or {})
    config = node.config
    labelled = _unlabelled(node)
    if labelled:
        # Dify's start variables always carry a label (its loader requires one): the name
        # stands in for one the workflow does not give (and data.cellwire says so).
        config = {**config, "variables": [
            {**v, "label": v["variable"]} if isinstance(v, dict) and v.get("variable")
            in labelled else v for v in config["variables"]]}
    if node.type == "tool" and isinstance(config.get("tool_parameters"), dict):
        config = {**config, "tool_parameters": {
            k: mention_selector(v, absolute=False) for k, v in config["tool_parameters"].items()}}
    data: dict[str, Any] = {**config, "type": node.type, "title": node.title,
                            "desc": node.description, **_containment(node, workflow)}
    if node.error_strategy != "fail":
        data["error_strategy"] = node.error_strategy
    if node.default_value or "default_value_types" in meta:
        types = meta.get("default_value_types") or {}
        data["default_value"] = [_default(k, v, types.get(k)) for k, v in
                                 node.default_value.items()]
    retry_config = _retry_config(node.retry, meta.get("retry_config"))
    if retry_config is not None:
        data["retry_config"] = retry_config
    cellwire = _cellwire_extras(node)
    if cellwire:
        data["cellwire"] = cellwire
    data.update(meta.get("data") or {})
    wrapper: dict[str, Any] = {"id": node.id, "type": WRAPPER_TYPES.get(node.type, "custom"),
                               "data": data}
    if node.position is not None:
        wrapper["position"] = {"x": node.position.x, "y": node.position.y}
    if node.parent:
        wrapper["parentId"] = node.parent
    wrapper.update({k: v for k, v in meta.items()
                    if k not in ("data", "retry_config", "default_value_types")})
    return wrapper


def _default(key: str, value: Any, kind: str | None) -> dict[str, Any]:
    if kind is None:
        kind = _value_type(value)
    if kind in JSON_DEFAULT_TYPES and not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return {"key": key, "type": kind, "value": value}


def _value_type(value: Any) -> str:
    if isinstance(value, (bool, str)) or value is None:
        return "string" if not isinstance(value, bool) else "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            return "array[string]"
        if value and all(isinstance(v, (int, float)) for v in value):
            return "array[number]"
        return "array[object]"
    return "string"


def _retry_config(retry: Retry, original: Any) -> dict[str, Any] | None:
    if isinstance(original, dict) and retry_from_dify(original) == retry:
        return original
    return canonical_retry_config(retry)


def _cellwire_extras(node: Node) -> dict[str, Any]:
    """Node facts Dify has no field for, written under ``data.cellwire`` (Dify ignores it)."""
    extras: dict[str, Any] = {}
    if node.max_time is not None:
        extras["max_time"] = node.max_time
    dify_retry = Retry(max_retries=node.retry.max_retries, interval=node.retry.interval,
                       backoff=1.0, max_interval=max(60.0, node.retry.interval), jitter=False)
    if node.retry.max_retries and node.retry != dify_retry:
        extras["retry"] = node.retry.model_dump()
    labelled = _unlabelled(node)
    if labelled:
        extras["labelled"] = labelled
    return extras


def _unlabelled(node: Node) -> list[str]:
    """The start variables of ``node`` that have no label: the export gives them their name."""
    variables = node.config.get("variables") if node.type == "start" else None
    if not isinstance(variables, list):
        return []
    return [v["variable"] for v in variables if isinstance(v, dict) and not v.get("label")
            and isinstance(v.get("variable"), str) and v["variable"]]


def _note(note: Note) -> dict[str, Any]:
    meta = dict(note.meta.get("dify") or {})
    data = {**NOTE_DEFAULTS, **(meta.pop("data", None) or {}), "text": note.text}
    wrapper: dict[str, Any] = {"id": note.id, "type": NOTE_TYPE, "data": data}
    if note.position is not None:
        wrapper["position"] = {"x": note.position.x, "y": note.position.y}
    wrapper.update(meta)
    return wrapper


def _edge(source: str, handle: str, target: str, workflow: Workflow) -> dict[str, Any]:
    source_node, target_node = workflow.nodes.get(source), workflow.nodes.get(target)
    inside = _containment(source_node, workflow)
    data: dict[str, Any] = {
        "sourceType": source_node.type if source_node else "",
        "targetType": target_node.type if target_node else "",
        "isInIteration": bool(inside.get("isInIteration")),
        "isInLoop": bool(inside.get("isInLoop")),
    }
    data.update({k: v for k, v in inside.items() if k in ("iteration_id", "loop_id")})
    return {"id": f"{source}-{handle}-{target}-target", "type": "custom", "source": source,
            "sourceHandle": handle, "target": target, "targetHandle": "target",
            "zIndex": CHILD_Z_INDEX if inside else 0, "data": data}


def _environment(workflow: Workflow, ids: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"id": ids.get(v.name) or stable_id("env", v.name), "name": v.name,
         "value": "" if v.value_type == "secret" or v.value is None else v.value,
         "value_type": v.value_type, "description": v.description}
        for v in workflow.environment
    ]


def _conversation(workflow: Workflow, ids: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"id": ids.get(v.name) or stable_id("conversation", v.name),
         "name": v.name, "value_type": v.value_type, "value": v.value,
         "description": v.description, "selector": ["conversation", v.name]}
        for v in workflow.conversation_variables
    ]
