"""Dify DSL import: an app exported by Dify (DSL 0.1.x to 0.7.x, or none) as a Workflow.

Apps of mode ``chat``, ``agent-chat`` and ``completion`` have no graph: :mod:`.dify_convert`
turns them into the workflow Dify's converter makes, and the import goes on from there.

DSL 0.7.0 (Dify 1.16) adds portable Agent packages (top-level ``agent_packages``, agent v2
nodes binding one): they import and export unchanged; an agent v2 node cannot run here.

A node's ``config`` is its Dify ``data`` without the common fields (type, title, desc, error
strategy, default values, retry) and without canvas-only facts, which go to ``meta['dify']``
so that an export restores them. Legacy forms are brought to their current shape: a
``variable-assigner`` node is a ``variable-aggregator``, an if-else with top-level
``conditions`` gets one case, ``'true'``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cellwire.model import (
    ConversationVariable,
    Edge,
    EnvironmentVariable,
    Node,
    Note,
    Problem,
    Retry,
    Workflow,
    WorkflowError,
)
from cellwire.model.validate import duplicate_ids, validate
from cellwire.model.yaml12 import parse_yaml

from .dify_checks import dify_problems
from .dify_convert import CONVERTED_MODES, convert_app

MODES = ("workflow", "advanced-chat")
#: Deeper values than this are refused (nothing in a real export comes close).
MAX_DEPTH = 64

#: Fields of ``data`` that become the Node's own fields.
DATA_FIELDS = frozenset({"type", "title", "desc", "error_strategy", "default_value",
                         "retry_config", "cellwire"})
#: Canvas facts inside ``data``: kept in meta, restored on export.
DATA_UI = ("selected", "width", "height")
#: Containment flags inside ``data``: derived from Node.parent, regenerated on export.
DATA_CONTAINMENT = frozenset({"isInIteration", "isInLoop", "iteration_id", "loop_id"})
#: The React-Flow wrapper type of each node type (anything else is kept in meta).
WRAPPER_TYPES = {"iteration-start": "custom-iteration-start", "loop-start": "custom-loop-start",
                 "loop-end": "custom-loop-end"}
NOTE_TYPE = "custom-note"
#: Values an export writes when meta has none; equal values are not kept on import.
APP_DEFAULTS = {"icon": "\U0001F916", "icon_background": "#FFEAD5",
                "use_icon_as_answer_icon": False}
NOTE_DEFAULTS = {"type": "", "title": "", "desc": "", "theme": "blue", "author": "",
                 "showAuthor": True, "width": 240, "height": 88, "selected": False}
#: Default-value types whose values Dify writes as JSON text.
JSON_DEFAULT_TYPES = ("object", "array[number]", "array[string]", "array[object]",
                      "array[file]", "array[boolean]")


@dataclass
class DifyImport:
    """An imported workflow and what it could not bring along (warnings only)."""

    workflow: Workflow
    problems: list[Problem] = field(default_factory=list)
    #: The file's DSL version (None for files from before versions were written).
    version: str | None = None
    kind: str = "app"


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, node_id: str | None, field_name: str | None, message: str, hint: str = "",
            level: str = "error") -> None:
        self.problems.append(Problem(node_id, field_name, message, hint, level))  # type: ignore[arg-type]


def import_dify(data: Any, *, source: str | None = None) -> DifyImport:
    """Import a Dify DSL document (YAML text, bytes, or the parsed mapping).

    Raises :class:`WorkflowError` naming each broken part; nodes that cannot run here come
    back as warnings in :attr:`DifyImport.problems`. The workflow is untrusted (its code runs
    in the sandbox): :func:`cellwire.load` trusts files the user trusted.
    """
    where = source or "the Dify DSL document"
    if isinstance(data, (str, bytes)):
        data = parse_yaml(data, source)
    out = _Collector()
    workflow, version, kind = _build(data, out)
    errors = [p for p in out.problems if p.level == "error"]
    if workflow is not None and not errors:
        _keep_unknown_types(workflow)
        for problem in [*validate(workflow), *dify_problems(workflow)]:
            out.problems.append(problem)
        errors = [p for p in out.problems if p.level == "error"]
    if errors or workflow is None:
        raise WorkflowError(errors, f"{where}: cannot be imported")
    warnings = [p for p in out.problems if p.level == "warning"]
    warnings.extend(_version_problems(version))
    warnings.extend(unsupported_problems(workflow))
    return DifyImport(workflow.mark_origin(where, trusted=False), warnings, version, kind)


#: The newest DSL version this importer knows (Dify 1.16's CURRENT_APP_DSL_VERSION).
NEWEST_VERSION = (0, 7, 0)


def _version_problems(version: str | None) -> list[Problem]:
    """A warning for a file from a Dify newer than cellwire knows, or with a version that is
    not one (Dify holds the former as pending until a user confirms, and fails the latter:
    ``services/dsl_version.py``); files without a version are Dify's 0.1.0."""
    if version is None:
        return []
    parts = version.strip().split(".")
    if not all(p.isdigit() for p in parts) or len(parts) > 3:
        return [Problem(None, "version", f"{version!r} is not a DSL version (Dify refuses it)",
                        "write the version as text, e.g. '0.6.0'", "warning")]
    numbers = tuple(int(p) for p in parts) + (0,) * (3 - len(parts))
    if numbers > NEWEST_VERSION:
        newest = ".".join(map(str, NEWEST_VERSION))
        return [Problem(None, "version", f"DSL {version} is newer than {newest}, the newest "
                        "cellwire knows: fields the newer Dify added are kept as written but "
                        "may not run as there", "check the run; upgrade cellwire when it "
                        f"supports DSL {version}", "warning")]
    return []


def _keep_unknown_types(workflow: Workflow) -> None:
    """Dify's import keeps a node of a type its engine lacks (a plugin's, a fork's), and a run
    fails at it; a placeholder does the same here (:func:`unsupported_problems` warns)."""
    from cellwire.model import registry
    from cellwire.nodes.unsupported import placeholder

    for node in workflow.nodes.values():
        if registry.find(node.type) is None:
            placeholder(node.type)


def load_dify(data: Any, source: str | None = None) -> Workflow:
    """The workflow in a Dify DSL document; see :func:`import_dify`."""
    return import_dify(data, source=source).workflow


def unsupported_problems(workflow: Workflow) -> list[Problem]:
    """A warning per node that cannot run here (a type not built here, a tool no registered
    tool binds to, a knowledge base this machine lacks), naming what it needs and the fix."""
    from .runnable import cannot_run

    return [problem for problem, _reason in cannot_run(workflow)]


# -- the document ----------------------------------------------------------------------------


def _mapping(value: Any, out: _Collector, where: str, node_id: str | None = None,
             required: bool = True) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if value is None and not required:
        return {}
    out.add(node_id, where, f"must be a mapping, got {_kind(value)}",
            f"write '{where}' as key: value pairs")
    return {}


def _list(value: Any, out: _Collector, where: str, node_id: str | None = None) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    out.add(node_id, where, f"must be a list, got {_kind(value)}", f"write '{where}' as a list")
    return []


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _text(value: Any, out: _Collector, where: str, node_id: str | None = None,
          default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    out.add(node_id, where, f"must be text, got {_kind(value)}", f"write '{where}' as a string")
    return default


def _build(data: Any, out: _Collector) -> tuple[Workflow | None, str | None, str]:
    doc = _mapping(data, out, "document")
    if not doc:
        if not out.problems:
            out.add(None, "document", "the document is empty", "export the app from Dify again")
        return None, None, "app"
    if _depth(doc) > MAX_DEPTH:
        out.add(None, "document", f"values are nested more than {MAX_DEPTH} levels deep",
                "a Dify export is never this deep; export the app again")
        return None, None, "app"
    version = None if doc.get("version") is None else _text(doc.get("version"), out, "version")
    kind = _text(doc.get("kind"), out, "kind", default="app") or "app"
    app = _mapping(doc.get("app"), out, "app", required=False)
    mode = _text(app.get("mode"), out, "app.mode", default="workflow")
    converted_from = None
    if mode in CONVERTED_MODES:  # no graph: the workflow Dify's converter would make
        doc, problems = convert_app(doc)
        out.problems.extend(problems)
        if any(p.level == "error" for p in problems):
            return None, version, kind
        converted_from, app = mode, _mapping(doc.get("app"), out, "app")
        mode = str(app["mode"])
    if mode not in MODES:
        out.add(None, "app.mode", f"mode {mode!r} has no workflow graph",
                "cellwire imports workflow, advanced-chat (chatflow), chat, agent-chat and "
                "completion apps; export the app from Dify again")
        return None, version, kind
    body = _mapping(doc.get("workflow"), out, "workflow")
    graph = _mapping(body.get("graph"), out, "workflow.graph")
    if any(p.level == "error" for p in out.problems):
        return None, version, kind

    dify_meta: dict[str, Any] = {}
    if converted_from:  # kept for the reader; an export writes the workflow form
        dify_meta["converted_from"] = converted_from
    app_extra = {k: v for k, v in app.items() if k not in ("name", "mode", "description")
                 and not (k in APP_DEFAULTS and v == APP_DEFAULTS[k])}
    if app_extra:
        dify_meta["app"] = app_extra
    if kind != "app":
        dify_meta["kind"] = kind
    for key, value in doc.items():
        if key not in ("version", "kind", "app", "workflow") and value not in (None, [], {}):
            dify_meta.setdefault("document", {})[key] = value
    for key, value in body.items():
        if key not in ("graph", "features", "environment_variables", "conversation_variables"):
            dify_meta.setdefault("workflow", {})[key] = value
    for key, value in graph.items():
        if key not in ("nodes", "edges"):
            dify_meta.setdefault("graph", {})[key] = value

    nodes, notes = _nodes(_list(graph.get("nodes"), out, "workflow.graph.nodes"), out, mode)
    edges = _edges(_list(graph.get("edges"), out, "workflow.graph.edges"), out)
    environment, env_ids = _environment(body.get("environment_variables"), out)
    conversation, conv_ids = _conversation(body.get("conversation_variables"), out)
    if env_ids:
        dify_meta["environment_ids"] = env_ids
    if conv_ids:
        dify_meta["conversation_ids"] = conv_ids
    features = _mapping(body.get("features"), out, "workflow.features", required=False)
    if out.problems and any(p.level == "error" for p in out.problems):
        return None, version, kind
    try:
        workflow = Workflow(
            _text(app.get("name"), out, "app.name", default="workflow") or "workflow",
            mode=mode,
            description=_text(app.get("description"), out, "app.description"),
            nodes={n.id: n for n in nodes},
            edges=edges,
            environment=environment,
            conversation_variables=conversation,
            features=features,
            notes=notes,
            meta={"dify": dify_meta} if dify_meta else {},
        )
    except ValidationError as exc:
        _pydantic(exc, out, None, "workflow")
        return None, version, kind
    return workflow, version, kind


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _pydantic(exc: ValidationError, out: _Collector, node_id: str | None, prefix: str) -> None:
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        out.add(node_id, f"{prefix}.{loc}" if loc else prefix,
                f"{err['msg']} (got {repr(err.get('input'))[:60]})", "fix the value there")


# -- references --------------------------------------------------------------------------------

_TEMPLATE_REF = re.compile(r"\{\{#([A-Za-z0-9_]{1,50})\.(sys\.)?([A-Za-z0-9_.]+)#\}\}")


def _modern_references(value: Any, starts: set[str], out: _Collector, node_id: str,
                       where: str = "") -> Any:
    """Old exports read system variables through the start node (``[start, 'sys.query']``);
    some newer ones write ``userinput.x`` for ``sys.x``. Both become ``sys`` references."""
    if isinstance(value, Mapping):
        return {k: _modern_references(v, starts, out, node_id, f"{where}.{k}" if where else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        if (len(value) == 2 and all(isinstance(p, str) for p in value) and value[0] in starts
                and value[1].startswith("sys.")):
            return ["sys", value[1][4:]]
        return [_modern_references(v, starts, out, node_id, f"{where}[{i}]")
                for i, v in enumerate(value)]
    if isinstance(value, str) and "{{#" in value:
        def fix(match: re.Match[str]) -> str:
            head, sys_prefix, rest = match.groups()
            if head in starts and sys_prefix:
                return "{{#sys." + rest + "#}}"
            if head == "userinput" and "userinput" not in starts:
                out.add(node_id, where, f"'userinput.{rest}' is read as 'sys.{rest}'",
                        "check the reference", "warning")
                return "{{#sys." + rest + "#}}"
            return match.group(0)

        return _TEMPLATE_REF.sub(fix, value)
    return value


def _dangling_prompt_variables(nodes: list[Node], out: _Collector) -> None:
    """Legacy LLM ``variables`` entries naming deleted nodes: Dify ignores them, so do we."""
    ids = {n.id for n in nodes}
    for node in nodes:
        variables = node.config.get("variables")
        if node.type != "llm" or not isinstance(variables, list):
            continue
        kept = []
        for index, var in enumerate(variables):
            selector = var.get("value_selector") if isinstance(var, Mapping) else None
            if (isinstance(selector, list) and selector and isinstance(selector[0], str)
                    and selector[0] not in ids and selector[0] not in _PREFIXES):
                out.add(node.id, f"variables[{index}].value_selector",
                        f"the unused legacy variable refers to node {selector[0]!r}, which does "
                        "not exist; it was dropped", "nothing to do", "warning")
                continue
            kept.append(var)
        if len(kept) != len(variables):
            node.config = {**node.config, "variables": kept}


_PREFIXES = ("sys", "env", "conversation")


# -- nodes -----------------------------------------------------------------------------------


def _nodes(raw: list[Any], out: _Collector, mode: str) -> tuple[list[Node], list[Note]]:
    nodes: list[Node] = []
    notes: list[Note] = []
    ids: list[str] = []
    starts = {str(n.get("id")) for n in raw if isinstance(n, Mapping)
              and isinstance(n.get("data"), Mapping) and n["data"].get("type") == "start"}
    for index, item in enumerate(raw):
        where = f"workflow.graph.nodes[{index}]"
        wrapper = _mapping(item, out, where)
        if not wrapper:
            continue
        node_id = _text(wrapper.get("id"), out, f"{where}.id")
        if not node_id:
            out.add(None, f"{where}.id", "the node has no id", "give every node an id")
            continue
        data = _mapping(wrapper.get("data"), out, f"{where}.data", node_id)
        if wrapper.get("type") == NOTE_TYPE:
            note = _note(node_id, wrapper, data, out)
            if note is not None:
                notes.append(note)
            continue
        ids.append(node_id)
        node = _node(node_id, wrapper, data, out)
        if node is not None:
            node.config = _modern_references(node.config, starts, out, node_id)
            nodes.append(node)
    _dangling_prompt_variables(nodes, out)
    for problem in duplicate_ids(ids):
        out.problems.append(problem)
    return nodes, notes


def _position(value: Any, out: _Collector, node_id: str) -> dict[str, float] | None:
    if value is None:
        return None
    pos = _mapping(value, out, "position", node_id)
    result = {}
    for axis in ("x", "y"):
        coordinate = pos.get(axis, 0)
        if isinstance(coordinate, bool) or not isinstance(coordinate, (int, float)):
            out.add(node_id, f"position.{axis}", f"must be a number, got {_kind(coordinate)}",
                    "write the position as numbers")
            return None
        result[axis] = coordinate
    return result


def _node(node_id: str, wrapper: dict[str, Any], data: dict[str, Any],
          out: _Collector) -> Node | None:
    node_type = _text(data.get("type"), out, "data.type", node_id)
    if not node_type:
        out.add(node_id, "data.type", "the node has no type", "set data.type, e.g. 'llm'")
        return None
    config = {k: v for k, v in data.items()
              if k not in DATA_FIELDS and k not in DATA_CONTAINMENT and k not in DATA_UI}
    node_type, config = _modernise(node_type, config)
    parent = wrapper.get("parentId")
    if parent is None and data.get("isInIteration") is not False:
        parent = data.get("iteration_id")
    if parent is None and data.get("isInLoop") is not False:
        parent = data.get("loop_id")
    parent = _text(parent, out, "parentId", node_id) or None

    wrapper_meta = {k: v for k, v in wrapper.items()
                    if k not in ("id", "data", "position", "parentId")}
    if wrapper_meta.get("type") == WRAPPER_TYPES.get(node_type, "custom"):
        del wrapper_meta["type"]
    data_meta = {k: data[k] for k in DATA_UI if k in data}
    dify_meta: dict[str, Any] = dict(wrapper_meta)
    if data_meta:
        dify_meta["data"] = data_meta

    strategy = data.get("error_strategy") or "fail"
    retry = _retry(data.get("retry_config"), out, node_id, dify_meta)
    default_value = _default_value(data.get("default_value"), out, node_id, dify_meta)
    extra = _mapping(data.get("cellwire"), out, "data.cellwire", node_id, required=False)
    labelled = extra.get("labelled")
    if isinstance(labelled, list) and isinstance(config.get("variables"), list):
        # Labels cellwire's export added (Dify requires one): the workflow gave none.
        config["variables"] = [
            {k: x for k, x in v.items() if k != "label"}
            if isinstance(v, dict) and v.get("variable") in labelled
            and v.get("label") == v.get("variable") else v for v in config["variables"]]
    if "retry" in extra:
        retry = extra["retry"]
    # No retry_config: the node sets no policy, and its type's default applies.
    set_retry = {} if data.get("retry_config") is None and "retry" not in extra else {
        "retry": retry}
    try:
        return Node(
            id=node_id,
            type=node_type,
            title=_text(data.get("title"), out, "data.title", node_id),
            description=_text(data.get("desc"), out, "data.desc", node_id),
            config=config,
            parent=parent,
            position=_position(wrapper.get("position"), out, node_id),
            error_strategy=strategy,
            default_value=default_value,
            **set_retry,
            max_time=extra.get("max_time"),
            meta={"dify": dify_meta} if dify_meta else {},
        )
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            out.add(node_id, _DIFY_FIELD.get(loc.split(".")[0], loc) or None,
                    f"{err['msg']} (got {repr(err.get('input'))[:60]})",
                    "fix the value in the node's data")
        return None


#: Node fields back to the Dify names a user sees in the file.
_DIFY_FIELD = {"id": "id", "error_strategy": "data.error_strategy", "retry": "data.retry_config",
               "default_value": "data.default_value", "title": "data.title",
               "description": "data.desc", "position": "position", "parent": "parentId",
               "max_time": "data.cellwire.max_time"}


def _modernise(node_type: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Bring legacy node forms to the shape current Dify writes."""
    context = config.get("context")
    if node_type == "llm" and isinstance(context, Mapping):
        selector = context.get("variable_selector")
        # Some generators nest the context selector in a list of one.
        if isinstance(selector, list) and len(selector) == 1 and isinstance(selector[0], list):
            config = {**config, "context": {**context, "variable_selector": selector[0]}}
    if node_type == "tool" and isinstance(config.get("tool_parameters"), Mapping):
        config = {**config, "tool_parameters": {
            k: mention_selector(v, absolute=True) for k, v in config["tool_parameters"].items()}}
    if node_type == "variable-assigner":
        node_type = "variable-aggregator"
    if node_type == "if-else" and "cases" not in config and "conditions" in config:
        config = dict(config)
        case = {"case_id": "true", "logical_operator": config.pop("logical_operator", "and"),
                "conditions": config.pop("conditions")}
        config["cases"] = [case]
    return node_type, config


def mention_selector(param: Any, *, absolute: bool) -> Any:
    """A 'mention' parameter reads its extractor node's output through a selector relative to
    that node; cellwire keeps it absolute (``[extractor, *path]``) so validation can check it."""
    mention = param.get("mention_config") if isinstance(param, Mapping) else None
    if not isinstance(mention, Mapping):
        return param
    extractor, selector = mention.get("extractor_node_id"), mention.get("output_selector")
    if not isinstance(extractor, str) or not isinstance(selector, list):
        return param
    if absolute and selector[:1] != [extractor]:
        selector = [extractor, *selector]
    elif not absolute and selector[:1] == [extractor]:
        selector = selector[1:]
    else:
        return param
    return {**param, "mention_config": {**mention, "output_selector": selector}}


def canonical_retry_config(retry: Retry) -> dict[str, Any] | None:
    """The ``retry_config`` an export writes for ``retry`` when it has no original to keep."""
    if retry.max_retries == 0:
        return None
    return {"retry_enabled": True, "max_retries": retry.max_retries,
            "retry_interval": round(retry.interval * 1000)}


def stable_id(*parts: str) -> str:
    """The id an export gives a variable that has none: the same for the same name."""
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(parts)))


_ID_NAMESPACE = uuid.UUID("6f1c2a4e-5b0d-4c7e-9a53-0c3f1d2e8b71")


def _retry(value: Any, out: _Collector, node_id: str, dify_meta: dict[str, Any]) -> Any:
    """Dify retries at a fixed interval in milliseconds: no backoff, no jitter."""
    if value is None:
        return Retry()
    raw = _mapping(value, out, "data.retry_config", node_id)
    derived = _retry_value(raw, out, node_id)
    try:
        canonical = canonical_retry_config(Retry.model_validate(derived)
                                           if isinstance(derived, dict) else derived)
    except ValidationError:
        canonical = None
    if raw != canonical:  # keep only what an export could not write back by itself
        dify_meta["retry_config"] = raw
    return derived


def _retry_value(raw: dict[str, Any], out: _Collector, node_id: str) -> Any:
    if not raw.get("retry_enabled"):
        return Retry()
    numbers = {}
    # graphon's defaults: no retries, no wait between them.
    for key, default in (("max_retries", 0), ("retry_interval", 0)):
        try:
            # graphon's RetryConfig declares both as int (lax): "1000", " 500 " and 1000.0
            # are taken as numbers, as Dify takes them.
            numbers[key] = _DIFY_INT.validate_python(raw.get(key, default))
        except ValidationError:
            unit = "milliseconds" if key == "retry_interval" else "a whole number"
            out.add(node_id, f"data.retry_config.{key}",
                    f"must be {unit}, got {raw.get(key)!r}", "write a number, e.g. 1000")
            return Retry()
    seconds = max(0.0, numbers["retry_interval"] / 1000)
    return {"max_retries": numbers["max_retries"], "interval": seconds, "backoff": 1.0,
            "max_interval": max(60.0, seconds), "jitter": False}


_DIFY_INT = TypeAdapter(int)


def retry_from_dify(raw: Mapping[str, Any]) -> Retry:
    """The Retry a Dify ``retry_config`` means (for the exporter's consistency check)."""
    out = _Collector()
    value = _retry_value(dict(raw), out, "-")
    try:
        return Retry.model_validate(value) if isinstance(value, dict) else value
    except ValidationError:
        return Retry()


def _default_value(value: Any, out: _Collector, node_id: str,
                   dify_meta: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    types: dict[str, str] = {}
    for index, item in enumerate(_list(value, out, "data.default_value", node_id)):
        where = f"data.default_value[{index}]"
        entry = _mapping(item, out, where, node_id)
        key = _text(entry.get("key"), out, f"{where}.key", node_id)
        if not key:
            out.add(node_id, f"{where}.key", "the default value names no output",
                    "set key to the output's name")
            continue
        kind = _text(entry.get("type"), out, f"{where}.type", node_id, default="string")
        raw = entry.get("value")
        if kind in JSON_DEFAULT_TYPES and isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip() else None
            except json.JSONDecodeError as exc:
                out.add(node_id, f"{where}.value", f"is not valid JSON for type {kind}: {exc}",
                        "write the value as JSON")
                continue
        result[key] = raw
        types[key] = kind
    if types:
        dify_meta["default_value_types"] = types
    return result


def _note(node_id: str, wrapper: dict[str, Any], data: dict[str, Any],
          out: _Collector) -> Note | None:
    wrapper_meta = {k: v for k, v in wrapper.items() if k not in ("id", "data", "position")
                    and not (k == "type" and v == NOTE_TYPE)}
    data_meta = {k: v for k, v in data.items() if k != "text"
                 and not (k in NOTE_DEFAULTS and v == NOTE_DEFAULTS[k])}
    dify_meta: dict[str, Any] = dict(wrapper_meta)
    if data_meta:
        dify_meta["data"] = data_meta
    try:
        return Note(id=node_id, text=_text(data.get("text"), out, "data.text", node_id),
                    position=_position(wrapper.get("position"), out, node_id),
                    meta={"dify": dify_meta} if dify_meta else {})
    except ValidationError as exc:
        _pydantic(exc, out, node_id, "note")
        return None


# -- edges and variables -----------------------------------------------------------------------


def _edges(raw: list[Any], out: _Collector) -> list[Edge]:
    edges: list[Edge] = []
    seen: set[tuple[str, str, str]] = set()
    for index, item in enumerate(raw):
        where = f"workflow.graph.edges[{index}]"
        edge = _mapping(item, out, where)
        if not edge:
            continue
        source = _text(edge.get("source"), out, f"{where}.source")
        target = _text(edge.get("target"), out, f"{where}.target")
        handle = _text(edge.get("sourceHandle"), out, f"{where}.sourceHandle") or "source"
        if not source or not target:
            out.add(source or target or None, where, "the edge lacks a source or a target",
                    "give the edge both 'source' and 'target' node ids")
            continue
        key = (source, handle, target)
        if key not in seen:  # Dify keeps one edge per (source, handle, target) as well
            seen.add(key)
            edges.append(Edge(source=source, target=target, source_handle=handle))
    return edges


def _environment(value: Any, out: _Collector) -> tuple[list[EnvironmentVariable], dict[str, str]]:
    variables, ids = [], {}
    for index, item in enumerate(_list(value, out, "workflow.environment_variables")):
        where = f"workflow.environment_variables[{index}]"
        raw = _mapping(item, out, where)
        name = _text(raw.get("name"), out, f"{where}.name")
        if not name:
            out.add(None, f"{where}.name", "the environment variable has no name",
                    "give it a name")
            continue
        kind = raw.get("value_type") or "string"
        # A secret's value is never taken from a file: the user grants one at run time.
        value = None if kind == "secret" else raw.get("value")
        if kind == "secret" and raw.get("value") not in (None, ""):
            out.add(None, f"{where}.value", f"the secret {name!r} has a value in the file; it was "
                    "dropped", f"grant it when running: --secret {name}", "warning")
        try:
            variables.append(EnvironmentVariable(
                name=name, value=value, value_type=kind,
                description=_text(raw.get("description"), out, f"{where}.description")))
        except ValidationError as exc:
            _pydantic(exc, out, None, where)
            continue
        if raw.get("id") is not None and str(raw["id"]) != stable_id("env", name):
            ids[name] = str(raw["id"])
    return variables, ids


def _conversation(value: Any, out: _Collector,
                  ) -> tuple[list[ConversationVariable], dict[str, str]]:
    variables, ids = [], {}
    for index, item in enumerate(_list(value, out, "workflow.conversation_variables")):
        where = f"workflow.conversation_variables[{index}]"
        raw = _mapping(item, out, where)
        name = _text(raw.get("name"), out, f"{where}.name")
        if not name:
            out.add(None, f"{where}.name", "the conversation variable has no name",
                    "give it a name")
            continue
        try:
            variables.append(ConversationVariable(
                name=name, value_type=_text(raw.get("value_type"), out, f"{where}.value_type",
                                            default="string"),
                value=raw.get("value"),
                description=_text(raw.get("description"), out, f"{where}.description")))
        except ValidationError as exc:
            _pydantic(exc, out, None, where)
            continue
        if raw.get("id") is not None and str(raw["id"]) != stable_id("conversation", name):
            ids[name] = str(raw["id"])
    return variables, ids
