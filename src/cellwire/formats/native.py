"""The native YAML format (``cellwire: 1``): a short, readable, diff-friendly workflow file.

A node's config fields sit inline next to its common fields; a config field whose name is
one of the common fields (``title``, ``retry``...) goes under ``config:`` instead.
Defaults are left out. Secret environment values are never written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.representer import SafeRepresenter

from cellwire.model import (
    SOURCE,
    ConversationVariable,
    Edge,
    EnvironmentVariable,
    Node,
    Note,
    Problem,
    Retry,
    Workflow,
    WorkflowError,
    registry,
)
from cellwire.model.validate import duplicate_ids
from cellwire.model.yaml12 import parse_yaml

#: The format version this cellwire writes and the newest it reads.
FORMAT_VERSION = 1

#: ``MIGRATIONS[v]`` turns a version-``v`` document into a version ``v + 1`` one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

#: Node keys that are the node's own fields, not config.
NODE_FIELDS = (
    "id", "type", "title", "description", "parent", "position", "error_strategy",
    "default_value", "retry", "max_time", "meta",
)
RESERVED = frozenset(NODE_FIELDS) | {"config"}

TOP_KEYS = (
    "cellwire", "name", "mode", "description", "nodes", "edges", "environment",
    "conversation_variables", "features", "notes", "meta",
)

_DOCS = "see docs/yaml-format.md"


# -- writing ----------------------------------------------------------------------------------


def dump(workflow: Workflow, *, compact: bool = False) -> str:
    """``workflow`` as native YAML text. Secret environment values are written as null.

    ``compact`` writes it as JSON, which is YAML in flow style, a hundred times faster than
    the block style (libyaml's emitter when the document holds what JSON cannot: dates,
    infinities): for copies that programs read back (a run's version), not for files people
    edit and diff."""
    doc: dict[str, Any] = {"cellwire": FORMAT_VERSION, "name": workflow.name}
    if workflow.mode != "workflow":
        doc["mode"] = workflow.mode
    if workflow.description:
        doc["description"] = workflow.description
    if workflow.nodes:
        doc["nodes"] = [_node_doc(node) for node in workflow.nodes.values()]
    if workflow.edges:
        doc["edges"] = [_edge_doc(edge) for edge in workflow.edges]
    if workflow.environment:
        doc["environment"] = [_env_doc(var) for var in workflow.environment]
    if workflow.conversation_variables:
        doc["conversation_variables"] = [
            _non_default(var, ConversationVariable(name=var.name), first=("name",))
            for var in workflow.conversation_variables
        ]
    if workflow.features:
        doc["features"] = workflow.features
    if workflow.notes:
        doc["notes"] = [_note_doc(note) for note in workflow.notes]
    if workflow.meta:
        doc["meta"] = workflow.meta
    as_json = _check_plain(doc)
    if compact and as_json:
        text = _json_flow(doc)
        if text is not None:
            return text
    return yaml.dump(doc, Dumper=_CompactDumper if compact else _Dumper, sort_keys=False,
                     allow_unicode=True, width=100, default_flow_style=False)


def _node_doc(node: Node) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": node.id, "type": node.type}
    # A missing title means "the id", which is what add_node gives every node.
    if node.title != node.id:
        doc["title"] = node.title
    if node.description:
        doc["description"] = node.description
    if node.parent is not None:
        doc["parent"] = node.parent
    if node.position is not None:
        doc["position"] = _Flow(node.position.model_dump())
    clashing = {}
    for key, value in node.config.items():
        if key in RESERVED:
            clashing[key] = value
        else:
            doc[key] = value
    if clashing:
        doc["config"] = clashing
    if node.error_strategy != "fail":
        doc["error_strategy"] = node.error_strategy
    if node.default_value:
        doc["default_value"] = node.default_value
    # An explicit retry is kept even when it equals Retry(): `retry: 0` on an llm node turns
    # off its node type's default policy, and must survive a round trip.
    if node.retry != Retry() or "retry" in node.model_fields_set:
        changed = _non_default(node.retry, Retry())
        doc["retry"] = changed.get("max_retries", 0) if set(changed) <= {"max_retries"} \
            else changed
    if node.max_time is not None:
        doc["max_time"] = node.max_time
    if node.meta:
        doc["meta"] = node.meta
    return doc


def _edge_doc(edge: Edge) -> dict[str, Any]:
    doc = _Flow(source=edge.source, target=edge.target)
    if edge.source_handle != SOURCE:
        doc["handle"] = edge.source_handle
    return doc


def _env_doc(var: EnvironmentVariable) -> dict[str, Any]:
    doc = _non_default(var, EnvironmentVariable(name=var.name), first=("name",))
    if var.value_type == "secret":
        # The user grants the value at run time; it never reaches a file.
        doc.pop("value", None)
        doc = {"name": var.name, "value_type": "secret", "value": None, **doc}
    return doc


def _note_doc(note: Note) -> dict[str, Any]:
    doc = _non_default(note, Note(id=note.id), first=("id",))
    if note.position is not None:
        doc["position"] = _Flow(note.position.model_dump())
    return doc


def _non_default(model: BaseModel, default: BaseModel, first: tuple[str, ...] = ()) -> dict:
    doc = {key: getattr(model, key) for key in first}
    for key in type(model).model_fields:
        value = getattr(model, key)
        if key not in doc and value != getattr(default, key):
            doc[key] = value.model_dump() if isinstance(value, BaseModel) else value
    return doc


_PLAIN = (str, int, float, bool, type(None), date, datetime)


def _check_plain(doc: dict[str, Any]) -> bool:
    """Refuse values YAML cannot hold, naming the node and field, before the dumper fails;
    whether JSON holds the document as YAML reads it back (see :func:`_check_value`)."""
    as_json = True
    for key, value in doc.items():
        if key == "nodes":
            for node in value:
                for field, item in node.items():
                    as_json &= _check_value(item, field, node["id"])
        else:
            as_json &= _check_value(value, key, None)
    return as_json


def _check_value(value: Any, path: str, node_id: str | None) -> bool:
    """Refuse what YAML cannot hold; False for what JSON would change: a date (JSON has
    none), an infinity or NaN (JSON has none), a float written without a point (``1e+20``,
    which YAML 1.1 reads as a string)."""
    if isinstance(value, str):
        return True
    if isinstance(value, Mapping):
        as_json = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise _unwritable(node_id, path, f"the key {key!r} is not a string")
            as_json &= _check_value(item, f"{path}.{key}", node_id)
        return as_json
    if isinstance(value, (list, tuple)):
        as_json = True
        for index, item in enumerate(value):
            as_json &= _check_value(item, f"{path}[{index}]", node_id)
        return as_json
    if not isinstance(value, _PLAIN):
        raise _unwritable(node_id, path, f"a {type(value).__name__} cannot be written to YAML")
    if isinstance(value, float):
        return math.isfinite(value) and "." in repr(value)
    return not isinstance(value, date)


#: Characters a YAML reader refuses, or reads as a line break, even in double quotes: JSON
#: leaves them as they are, so they are written as escapes.
_NOT_YAML = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def _json_flow(doc: dict[str, Any]) -> str | None:
    """``doc`` as JSON that YAML reads back as the same document; None when it holds a
    lone surrogate, which neither can write."""
    text = _NOT_YAML.sub(lambda m: f"\\u{ord(m.group()):04x}",
                         json.dumps(doc, ensure_ascii=False)) + "\n"
    try:
        text.encode()
    except UnicodeEncodeError:
        return None
    return text


def _unwritable(node_id: str | None, field: str, message: str) -> WorkflowError:
    return WorkflowError([Problem(node_id, field, message,
                                  "use strings, numbers, booleans, lists and mappings")],
                         "the workflow cannot be written as YAML")


class _Flow(dict):
    """A small mapping written on one line: ``{source: a, target: b}``."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        # Our reader limits aliases; the writer never needs them.
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key, as people write YAML by hand.
        super().increase_indent(flow, False)


# Characters YAML 1.1 counts as line breaks besides \n; only double quotes keep them intact.
_ODD_BREAKS = frozenset("\x85\u2028\u2029")


def _represent_str(dumper: SafeRepresenter, text: str) -> yaml.Node:
    if _ODD_BREAKS.intersection(text):
        style: str | None = '"'
    else:
        style = "|" if "\n" in text.rstrip("\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def _represent_list(dumper: SafeRepresenter, items: list | tuple) -> yaml.Node:
    # Selectors and short lists of words read best on one line: [start, name].
    short = (
        bool(items)
        and all(isinstance(i, (str, int, float)) and "\n" not in str(i) for i in items)
        and sum(len(str(i)) + 2 for i in items) <= 60
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=short)


def _represent_flow(dumper: SafeRepresenter, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


class _CompactDumper(yaml.CSafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


for _dumper in (_Dumper, _CompactDumper):
    _dumper.add_representer(str, _represent_str)
    _dumper.add_representer(list, _represent_list)
    _dumper.add_representer(tuple, _represent_list)
    _dumper.add_representer(_Flow, _represent_flow)


# -- reading ----------------------------------------------------------------------------------


def migrate(data: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """Step a native document up to :data:`FORMAT_VERSION` through :data:`MIGRATIONS`."""
    version = data.get("cellwire")
    where = f"{source or 'the document'}"
    if isinstance(version, bool) or not isinstance(version, int):
        raise WorkflowError(
            [Problem(None, "cellwire", f"the format version must be a whole number, got "
                     f"{version!r}", f"write 'cellwire: {FORMAT_VERSION}'")],
            f"{where}: not a valid cellwire workflow",
        )
    if version > FORMAT_VERSION:
        raise WorkflowError(
            [Problem(None, "cellwire", f"the file is format version {version}; this cellwire "
                     f"reads versions up to {FORMAT_VERSION}",
                     "upgrade cellwire (pip install -U cellwire)")],
            f"{where}: written by a newer cellwire",
        )
    while version < FORMAT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise WorkflowError(
                [Problem(None, "cellwire", f"format version {version} is not supported",
                         f"write 'cellwire: {FORMAT_VERSION}'")],
                f"{where}: not a valid cellwire workflow",
            )
        data = step(dict(data))
        version += 1
        data["cellwire"] = version
    return data


def load_native(data: str | bytes | Mapping[str, Any], source: str | None = None) -> Workflow:
    """A :class:`Workflow` from native YAML text or its parsed mapping.

    ``source`` (a file name) goes into error messages. Every problem in the document's
    structure is reported at once, as a :class:`WorkflowError`. The workflow is untrusted
    (its code runs in the sandbox): :func:`cellwire.load` trusts files the user trusted.
    """
    if isinstance(data, (str, bytes)):
        data = parse_yaml(data, source)
    where = source or "the document"
    summary = f"{where}: not a valid cellwire workflow"
    if not isinstance(data, Mapping):
        raise WorkflowError([Problem(None, None, f"the document is a {_kind(data)}, not a "
                                     "mapping", "start the file with 'cellwire: 1'")], summary)
    doc = migrate(dict(data), source)
    problems: list[Problem] = []
    for key in doc:
        if key not in TOP_KEYS:
            problems.append(Problem(None, str(key), "unknown top-level key",
                                    f"use one of {', '.join(TOP_KEYS)}"))
    nodes = _read_nodes(doc.get("nodes"), problems)
    fields: dict[str, Any] = {
        "nodes": nodes,
        "edges": _read_list(doc.get("edges"), "edges", _read_edge, problems),
        "environment": _read_list(doc.get("environment"), "environment",
                                  _model_reader(EnvironmentVariable), problems),
        "conversation_variables": _read_list(doc.get("conversation_variables"),
                                             "conversation_variables",
                                             _model_reader(ConversationVariable), problems),
        "notes": _read_list(doc.get("notes"), "notes", _model_reader(Note), problems),
    }
    # Any: a name that is not a string is one of the problems Workflow reports below.
    name: Any = doc.get("name") if doc.get("name") is not None else "workflow"
    top = {key: doc[key] for key in ("mode", "description", "features", "meta")
           if doc.get(key) is not None}
    try:
        # The top-level fields alone, so their problems show up next to the nodes' ones.
        Workflow(name, **top)
    except ValidationError as exc:
        problems.extend(_problems(exc, None, ""))
    if problems:
        raise WorkflowError(problems, summary)
    return Workflow(name, **top, **fields).mark_origin(where, trusted=False)


def _kind(value: Any) -> str:
    return {list: "list", str: "string", type(None): "empty document"}.get(type(value),
                                                                         type(value).__name__)


def _read_list(value: Any, where: str, read: Callable[[Any, str, list[Problem]], Any],
               problems: list[Problem]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(Problem(None, where, f"must be a list, got a {_kind(value)}",
                                f"write each entry as '- ...' ({_DOCS})"))
        return []
    found = []
    for index, item in enumerate(value):
        result = read(item, f"{where}[{index}]", problems)
        if result is not None:
            found.append(result)
    return found


def _model_reader(model: type[BaseModel]) -> Callable[[Any, str, list[Problem]], Any]:
    def read(item: Any, where: str, problems: list[Problem]) -> Any:
        if not isinstance(item, Mapping):
            problems.append(Problem(None, where, f"must be a mapping, got a {_kind(item)}",
                                    _DOCS))
            return None
        try:
            return model.model_validate(dict(item))
        except ValidationError as exc:
            problems.extend(_problems(exc, None, where))
            return None

    return read


def _read_edge(item: Any, where: str, problems: list[Problem]) -> Edge | None:
    if not isinstance(item, Mapping):
        problems.append(Problem(None, where, f"must be a mapping like {{source: a, target: b}}, "
                                f"got a {_kind(item)}", _DOCS))
        return None
    item = dict(item)
    source = item.get("source")
    node_id = source if isinstance(source, str) else None
    found = len(problems)
    for key in ("source", "target"):
        if not isinstance(item.get(key), str) or not item.get(key):
            got = "is missing" if item.get(key) is None else f"must be a node id, got {item[key]!r}"
            problems.append(Problem(node_id, f"{where}.{key}", f"the edge's {key} {got}",
                                    f"add '{key}: <node id>'"))
    if "source_handle" in item and "handle" not in item:
        item["handle"] = item.pop("source_handle")
    for key in item:
        if key not in ("source", "target", "handle"):
            problems.append(Problem(node_id, f"{where}.{key}", "unknown edge key",
                                    "an edge has source, target and optionally handle"))
    if len(problems) > found:
        return None
    handle = item.get("handle", SOURCE)
    if not isinstance(handle, str):
        # Branch handles in YAML are easily numbers or booleans (case ids like 'true').
        handle = str(handle).lower() if isinstance(handle, bool) else str(handle)
    return Edge(source=item["source"], target=item["target"], source_handle=handle)


def _read_nodes(value: Any, problems: list[Problem]) -> dict[str, Node]:
    raw = _read_list(value, "nodes", _read_node, problems)
    # Count ids of broken nodes too, so a duplicate is reported along with their problems.
    items = value if isinstance(value, list) else []  # not a list: _read_list reported it
    ids = [item.get("id") for item in items if isinstance(item, Mapping)]
    problems.extend(duplicate_ids([i for i in ids if isinstance(i, str) and i]))
    return {node.id: node for node in raw}


def _read_node(item: Any, where: str, problems: list[Problem]) -> Node | None:
    if not isinstance(item, Mapping):
        problems.append(Problem(None, where, f"must be a mapping with id and type, got a "
                                f"{_kind(item)}", _DOCS))
        return None
    node_id = item.get("id")
    if not isinstance(node_id, str) or not node_id:
        problems.append(Problem(None, f"{where}.id", "the node has no id" if node_id is None
                                else f"the id must be a string, got {node_id!r}",
                                "add 'id: <name>' (letters, digits, _ and -)"))
        return None
    found = len(problems)
    if not isinstance(item.get("type"), str) or not item.get("type"):
        problems.append(Problem(node_id, "type", "the node has no type" if item.get("type")
                                is None else f"the type must be a string, got {item['type']!r}",
                                f"add 'type: ...', one of {', '.join(registry.names())}"))
    config = item.get("config", {})
    if not isinstance(config, Mapping):
        problems.append(Problem(node_id, "config", f"must be a mapping, got a {_kind(config)}",
                                "put config fields under 'config:' or inline on the node"))
        config = {}
    config = dict(config)
    for key, value in item.items():
        if key in RESERVED:
            continue
        if key == "after":
            # The Python API's keyword; a file keeps connections in one place.
            sources = value if isinstance(value, list) else [value]
            edges = ", ".join(f"{{source: {s}, target: {node_id}}}" for s in sources)
            problems.append(Problem(node_id, "after", "'after' is not a node field in a file: "
                                    "connections go under 'edges:'",
                                    f"add {edges} to edges"))
            continue
        if not isinstance(key, str):
            problems.append(Problem(node_id, str(key), "field names must be strings",
                                    "quote the key"))
        elif key in config:
            problems.append(Problem(node_id, key, "given both inline and under 'config'",
                                    "keep one of them"))
        else:
            config[key] = value
    fields = {key: item[key] for key in NODE_FIELDS if key in item}
    if fields.get("title") is None:
        fields["title"] = node_id
    retry = fields.get("retry")
    if isinstance(retry, int) and not isinstance(retry, bool):
        fields["retry"] = {"max_retries": retry}
    elif retry is None:
        fields.pop("retry", None)
    for key in ("default_value", "meta", "description"):
        if key in fields and fields[key] is None:
            del fields[key]
    if len(problems) > found:
        return None
    try:
        return Node.model_validate({**fields, "config": config})
    except ValidationError as exc:
        problems.extend(_problems(exc, node_id, ""))
        return None


def _problems(exc: ValidationError, node_id: str | None, prefix: str) -> list[Problem]:
    found = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        field = ".".join(part for part in (prefix, loc) if part) or None
        got = err.get("input")
        text = repr(got) if not isinstance(got, Mapping) else "a mapping"
        text = text if len(text) <= 60 else text[:57] + "..."
        message = err["msg"] if err["type"] == "missing" else f"{err['msg']} (got {text})"
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        found.append(Problem(node_id, field, message, _DOCS))
    return found
