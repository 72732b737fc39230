"""A ``%%workflow`` cell body turned into a node config, and the node ids it refers to.

What the body is depends on the node type:

* ``llm``: the user prompt (``prompt_template``, plain text with ``{{#node.var#}}``
  references); ``--system`` adds a system message.
* ``code``: Python defining ``main(...)``; each parameter of ``main`` reads the workflow input
  of the same name (``start.<param>``) unless ``--var param=node.var`` says otherwise; the
  outputs are the keys of the dict literal ``main`` returns (or ``--out name:type``).
* ``template-transform``: the Jinja template.
* ``answer``: the reply; ``{{#node.var#}}`` references are filled in, the rest is literal.
* ``start``: YAML, a list of input names (or Dify's ``variables`` entries).
* ``end``: YAML, ``output_name: node.var`` pairs (or Dify's ``outputs`` entries).
* every other type: YAML with the type's config fields, named as in Dify.

Errors are :class:`CellError` with one line naming the fix.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cellwire.model import WorkflowError, template_references
from cellwire.model.yaml12 import parse_yaml

TEXT_TYPES = {"llm": "prompt_template", "template-transform": "template", "answer": "answer"}


class CellError(ValueError):
    """The cell body or its options cannot make a node; the message names the fix."""


@dataclass
class CellNode:
    """What a cell defines: the node's config and the node ids its body refers to."""

    config: dict[str, Any]
    references: list[str] = field(default_factory=list)


def parse_cell(node_type: str, body: str, *, model: str = "", system: str = "",
               variables: Mapping[str, str] | None = None,
               outputs: Mapping[str, str] | None = None, start_id: str = "start") -> CellNode:
    """The node config and references of a cell of ``node_type``."""
    if node_type == "llm":
        return _llm(body, model, system)
    if node_type == "code":
        return _code(body, dict(variables or {}), dict(outputs or {}), start_id)
    if node_type in TEXT_TYPES:
        return CellNode({TEXT_TYPES[node_type]: body},
                        _text_refs(body, jinja=node_type == "template-transform"))
    data = _yaml(body)
    if node_type == "start":
        return CellNode({"variables": _start_variables(data)})
    if node_type == "end":
        config = {"outputs": _end_outputs(data)}
        return CellNode(config, [o["value_selector"][0] for o in config["outputs"]
                                 if o["value_selector"]])
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CellError(f"the body of a {node_type} cell is YAML with its config fields; "
                        f"got a {type(data).__name__}: write 'field: value' lines")
    return CellNode(data, _config_refs(data))


def split_model(name: str) -> dict[str, Any]:
    """``provider/name`` -> Dify's ``model`` object (``mode: chat``)."""
    provider, sep, model = name.partition("/")
    if not sep or not provider or not model:
        raise CellError(f"--model {name!r} needs the form provider/name, e.g. openai/gpt-4o "
                        "or scripted/echo")
    return {"provider": provider, "name": model, "mode": "chat", "completion_params": {}}


def selector(text: str, where: str) -> list[str]:
    """``node.var`` -> ``["node", "var"]``."""
    parts = [p.strip() for p in str(text).split(".")]
    if len(parts) < 2 or not all(parts):
        raise CellError(f"{where}: {text!r} is not a reference; write node.var, "
                        "e.g. start.query")
    return parts


# -- by type ----------------------------------------------------------------------------------


def _llm(body: str, model: str, system: str) -> CellNode:
    if not body.strip():
        raise CellError("the llm cell is empty; write the prompt in the cell body")
    messages = [{"role": "system", "text": system}] if system else []
    messages.append({"role": "user", "text": body.strip("\n")})
    config: dict[str, Any] = {"prompt_template": messages}
    if model:
        config["model"] = split_model(model)
    return CellNode(config, _text_refs(body + "\n" + system))


def _code(body: str, variables: dict[str, str], outputs: dict[str, str],
          start_id: str) -> CellNode:
    try:
        tree = ast.parse(body)
    except SyntaxError as exc:
        raise CellError(f"line {exc.lineno}: {exc.msg}; fix the Python of the cell") from None
    main = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == "main"), None)
    if main is None:
        raise CellError("a code cell defines def main(...) returning a dict; add one")
    params = [a.arg for a in (*main.args.posonlyargs, *main.args.args, *main.args.kwonlyargs)]
    unknown = sorted(set(variables) - set(params))
    if unknown:
        raise CellError(f"--var {unknown[0]}=... names no parameter of main(); "
                        f"main takes: {', '.join(params) or 'nothing'}")
    config_vars = [
        {"variable": p, "value_selector": selector(variables[p], f"--var {p}")
         if p in variables else [start_id, p]}
        for p in params
    ]
    declared = {name: {"type": kind or "string"} for name, kind in outputs.items()}
    if not declared:
        declared = _returned_keys(main)
    config = {"code_language": "python3", "code": body.strip("\n") + "\n",
              "variables": config_vars, "outputs": declared}
    return CellNode(config, [v["value_selector"][0] for v in config_vars])


_CONSTANT_TYPES = {str: "string", int: "number", float: "number", bool: "boolean"}


def _returned_keys(main: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, dict[str, str]]:
    """Output names and types from ``return {"name": value, ...}`` dict literals in main."""
    found: dict[str, dict[str, str]] = {}
    for node in ast.walk(main):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    found.setdefault(key.value, {"type": _value_type(value)})
    return found


def _value_type(value: ast.expr) -> str:
    if isinstance(value, ast.Constant):
        return _CONSTANT_TYPES.get(type(value.value), "string")
    if isinstance(value, (ast.Dict, ast.DictComp)):
        return "object"
    if isinstance(value, (ast.List, ast.ListComp)):
        return "array[string]"
    if isinstance(value, ast.JoinedStr):
        return "string"
    if isinstance(value, ast.Compare):
        return "boolean"
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return {"str": "string", "int": "number", "float": "number", "len": "number",
                "bool": "boolean", "dict": "object", "list": "array[string]",
                "sum": "number", "round": "number"}.get(value.func.id, "string")
    if isinstance(value, ast.BinOp) and not isinstance(value.op, ast.Mod):
        return "number" if not _has_string(value) else "string"
    # A name or attribute: its type is unknown before the run; the common case is text.
    return "string"


def _has_string(node: ast.AST) -> bool:
    return any(isinstance(n, (ast.JoinedStr, ast.Constant)) and isinstance(
        getattr(n, "value", None), str) for n in ast.walk(node))


#: Short names a start cell may give an input's type (``[n:number, doc:file]``).
_INPUT_TYPES = {"text": "text-input", "string": "text-input", "str": "text-input",
                "number": "number", "int": "number", "float": "number",
                "paragraph": "paragraph", "select": "select", "file": "file",
                "files": "file-list", "checkbox": "checkbox", "bool": "checkbox",
                "json": "json_object"}
_KNOWN_TYPES = {*_INPUT_TYPES.values(), "json_object", "external_data_tool"}
_TYPED = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?::\s*([\w-]+)\s*(?:\((.*)\))?)?\s*$")


def _start_variables(data: Any) -> list[dict[str, Any]]:
    if data is None:
        return []
    if isinstance(data, dict) and "variables" in data:
        data = data["variables"]
    if isinstance(data, str):
        data = data.split()
    if isinstance(data, dict):
        # ``name: type`` pairs.
        return [_typed_input(f"{k}:{v}" if v else str(k)) for k, v in data.items()]
    if not isinstance(data, list):
        raise CellError("a start cell lists the input names, e.g. '[query, language]', or "
                        "'query: text-input' lines")
    variables = []
    for item in data:
        if isinstance(item, str):
            variables.append(_typed_input(item))
        elif isinstance(item, dict) and "variable" in item:
            variables.append(item)
        elif _is_type_pair(item):  # YAML read "n: number" as a mapping
            (name, kind), = item.items()
            variables.append(_typed_input(f"{name}:{kind}"))
        else:
            raise CellError(f"start input {item!r}: give a name or a mapping with 'variable'")
    return variables


def _is_type_pair(item: Any) -> bool:
    if not isinstance(item, dict) or len(item) != 1:
        return False
    kind = str(next(iter(item.values()))).split("(")[0].strip()
    return kind in _INPUT_TYPES or kind in _KNOWN_TYPES


def _typed_input(text: str) -> dict[str, Any]:
    """``name``, ``name:type`` or ``name:select(a|b)`` as a start variable."""
    match = _TYPED.match(text)
    if match is None:
        raise CellError(f"start input {text!r}: write name, name:type or name:select(a|b), "
                        f"e.g. [question, n:number, tone:select(short|long), doc:file]")
    name, kind, options = match.groups()
    kind = _INPUT_TYPES.get(kind or "text", kind or "text")
    if kind not in _KNOWN_TYPES:
        raise CellError(f"start input {name!r}: unknown type {match.group(2)!r}; use one of "
                        f"{', '.join(sorted(_INPUT_TYPES))}")
    variable: dict[str, Any] = {"variable": name, "label": name, "type": kind}
    if options is not None:
        if kind != "select":
            raise CellError(f"start input {name!r}: only a select takes options, "
                            f"e.g. {name}:select(a|b)")
        variable["options"] = [o.strip() for o in options.split("|") if o.strip()]
    return variable


def _end_outputs(data: Any) -> list[dict[str, Any]]:
    if data is None:
        return []
    if isinstance(data, dict) and "outputs" in data:
        data = data["outputs"]
    if isinstance(data, dict):
        return [{"variable": str(k), "value_selector": selector(v, f"output {k}")}
                for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(o, dict) and "variable" in o for o in data):
        return [{**o, "value_selector": list(o.get("value_selector") or [])} for o in data]
    raise CellError("an end cell maps output names to references, e.g. 'answer: llm.text'")


def _yaml(body: str) -> Any:
    """The body as YAML 1.2, like a workflow file: ``yes``, ``no`` and ``on`` stay strings."""
    try:
        return parse_yaml(body, source="the cell body") if body.strip() else None
    except WorkflowError as exc:
        problem = exc.problems[0]
        raise CellError(f"the cell body cannot be read: {problem.message}; "
                        f"{problem.hint}") from None


def _text_refs(text: str, *, jinja: bool = False) -> list[str]:
    return list(dict.fromkeys(s[0] for s in template_references(text, jinja=jinja)))


def _config_refs(data: Any) -> list[str]:
    """Node ids in selectors (lists of names) and templates anywhere in a YAML config."""
    found: list[str] = []
    for value in _walk(data):
        if isinstance(value, str):
            found.extend(_text_refs(value))
        elif _is_selector(value):
            found.append(value[0])
    return list(dict.fromkeys(found))


def _is_selector(value: Any) -> bool:
    return (isinstance(value, list) and len(value) >= 2
            and all(isinstance(p, str) and p for p in value))


def _walk(data: Any) -> Iterable[Any]:
    yield data
    if isinstance(data, dict):
        for value in data.values():
            yield from _walk(value)
    elif isinstance(data, list):
        for value in data:
            yield from _walk(value)


def parse_pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    """``["a=b", ...]`` (or ``a:b`` for ``--out``) -> ``{"a": "b"}``."""
    sep = ":" if flag == "--out" else "="
    pairs: dict[str, str] = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found and flag == "--out":
            key, value = item, ""
        elif not found or not key or not value:
            raise CellError(f"{flag} {item!r}: write {flag} name{sep}value")
        pairs[key.strip()] = value.strip()
    return pairs
