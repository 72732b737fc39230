"""start: the workflow's inputs, checked and converted to their declared types."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import NodeConfig, node_type
from cellwire.services.files.objects import describe, file_object

InputType = Literal[
    "text-input", "paragraph", "select", "number", "checkbox", "json_object", "file",
    "file-list", "external_data_tool",
]


class StartVariable(NodeConfig):
    variable: str
    label: str = ""
    type: InputType = "text-input"
    required: bool = False
    default: Any = None
    max_length: int | None = None
    options: list[str] = Field(default_factory=list)
    # File inputs: what a file given for it may be (Dify's FileUploadConfig).
    allowed_file_types: list[str] = Field(default_factory=list)
    allowed_file_extensions: list[str] | None = None
    allowed_file_upload_methods: list[str] = Field(default_factory=list)


class StartConfig(NodeConfig):
    variables: list[StartVariable] = Field(default_factory=list)


@node_type("start", config=StartConfig, start=True,
           outputs=lambda c: [v.variable for v in c.variables])
async def run(ctx: NodeContext) -> NodeResult:
    """The run's inputs, by the names the start node declares."""
    given: dict[str, Any] = ctx.pool.outputs(ctx.node.id) or {}
    outputs: dict[str, Any] = {}
    for var in ctx.config.variables:
        value = given.get(var.variable)
        if value is None or value == "":
            value = var.default
        outputs[var.variable] = _convert(var, value)
        if var.type in ("file", "file-list") and outputs[var.variable] is not None:
            outputs[var.variable] = _files(ctx, var, outputs[var.variable])
    # Inputs the start node does not declare still pass through, as Dify's pool keeps them.
    extra = {k: v for k, v in given.items() if k not in outputs}
    return NodeResult(inputs=dict(given), outputs={**extra, **outputs})


def _files(ctx: NodeContext, var: StartVariable, value: Any) -> Any:
    """Paths and URLs given for file inputs as Dify file objects (file objects stay), each
    checked against the variable's allowed types."""
    if var.type == "file-list":
        items = value if isinstance(value, list) else [value]
        return [_allowed(var, file_object(item, ctx.runtime.files)) for item in items]
    if isinstance(value, list):
        raise NodeError(f"the file input {var.variable!r} got a list", field=
                        f"variables.{var.variable}", hint="pass one file, or make it a file-list")
    return _allowed(var, file_object(value, ctx.runtime.files))


def _allowed(var: StartVariable, item: Any) -> Any:
    """``item`` if the variable allows it, as Dify's ``_is_file_valid_with_config``: a type
    outside ``allowed_file_types`` is refused, except ``custom`` (a kind Dify does not
    know), whose extension must then be in ``allowed_file_extensions`` when that is given."""
    if not isinstance(item, dict):
        return item
    kind = item.get("type") or "custom"
    extension = str(item.get("extension") or "").lower().lstrip(".")
    field = f"variables.{var.variable}"
    if var.allowed_file_types and kind not in var.allowed_file_types and kind != "custom":
        raise NodeError(f"the file input {var.variable!r} got {describe(item)}, of type {kind}; "
                        f"it allows {', '.join(var.allowed_file_types)}", field=field,
                        hint="give a file of an allowed type, or add its type to "
                             "allowed_file_types")
    allowed = [e.lower().lstrip(".") for e in var.allowed_file_extensions or []]
    if kind == "custom" and var.allowed_file_extensions is not None and extension not in allowed:
        raise NodeError(f"the file input {var.variable!r} got {describe(item)}, whose "
                        f"extension {extension or '(none)'!r} is not among "
                        f"allowed_file_extensions {var.allowed_file_extensions}", field=field,
                        hint="give a file with an allowed extension, or add it to "
                             "allowed_file_extensions")
    return item


def _convert(var: StartVariable, value: Any) -> Any:
    field = f"variables.{var.variable}"
    if value is None:
        if var.required:
            raise NodeError(f"the required input {var.variable!r} is missing", field=field,
                            hint=f"pass {var.variable}=...")
        return None
    if var.type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise NodeError(f"{value!r} is not a number", field=field, hint="pass a number")
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise NodeError(f"{value!r} is not a number", field=field,
                                hint="pass a number, e.g. 3 or 2.5") from None
            return int(number) if number.is_integer() and "." not in value else number
        return value
    if var.type == "checkbox":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if var.type == "json_object" and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise NodeError(f"not valid JSON: {exc}", field=field, hint="pass a JSON object") from None
    if var.type in ("text-input", "paragraph", "select"):
        value = value if isinstance(value, str) else str(value)
        if var.max_length and len(value) > var.max_length:
            raise NodeError(f"{len(value)} characters, more than max_length={var.max_length}",
                            field=field, hint="shorten the input")
        if var.type == "select" and var.options and value not in var.options:
            raise NodeError(f"{value!r} is not one of the options", field=field,
                            hint=f"pass one of {var.options}")
    return value
