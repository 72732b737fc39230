"""A tool: a name, a description, a JSON Schema of its arguments and a way to call it.

``@tool`` makes one of a typed Python function (sync or async): the schema comes from the
signature (through pydantic, which also checks and converts the arguments a model sends), the
description and the arguments' descriptions from the docstring (Google, NumPy or reST style).
OpenAPI and MCP tools are the same :class:`Tool` with an ``invoke`` of their own.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_type_hints, overload

import pydantic

if TYPE_CHECKING:
    from .context import ToolContext

#: ``invoke(arguments, context)``: what calling a tool runs.
Invoke = Callable[[dict[str, Any], "ToolContext"], Awaitable[Any]]

#: The provider of tools registered from Python without one named.
PYTHON = "python"


class ToolError(Exception):
    """A tool call failed: bad arguments, the tool raised, timed out or answered too much.
    ``hint`` says how to fix it; an agent hands the message back to its model."""

    def __init__(self, message: str, *, hint: str = "", kind: str = "ToolError"):
        super().__init__(message)
        self.hint = hint
        self.kind = kind


@dataclass(eq=False)
class Tool:
    """One callable tool. Calling the object itself calls the Python function it wraps."""

    name: str
    description: str
    #: The JSON Schema (an object) of the arguments.
    parameters: dict[str, Any]
    invoke: Invoke = field(repr=False)
    provider: str = PYTHON
    #: Seconds a call may take; None: the registry's default.
    timeout: float | None = None
    #: The Python function, for ``@tool`` tools.
    function: Callable[..., Any] | None = field(default=None, repr=False)
    #: Where it came from, for messages (``python``, ``openapi``, ``mcp``, ``builtin``).
    kind: str = "python"
    #: The secrets it may read from a run's grants (an OpenAPI tool's key); no others.
    secrets: tuple[str, ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.function is None:
            raise TypeError(f"tool {self.name!r} ({self.kind}) is called through a run: "
                            "use it in a tool or agent node")
        return self.function(*args, **kwargs)

    @property
    def key(self) -> str:
        """``provider/name``."""
        return f"{self.provider}/{self.name}"

    def function_schema(self) -> dict[str, Any]:
        """The tool in OpenAI's function form (what a chat request's ``tools`` takes)."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


# -- @tool -----------------------------------------------------------------------------------


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...


@overload
def tool(*, name: str | None = None, provider: str = PYTHON, description: str | None = None,
         timeout: float | None = None, register: bool = True) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(function: Callable[..., Any] | None = None, /, *, name: str | None = None,
         provider: str = PYTHON, description: str | None = None, timeout: float | None = None,
         register: bool = True) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a typed function (sync or async) a tool, registered for every later run.

    ``@cellwire.tool`` or ``@cellwire.tool(provider="acme", name="lookup", timeout=5)``.
    Arguments need type hints (a missing one is ``Any``); the docstring's first paragraph is
    the description, its ``Args:`` section describes the arguments. Blocking functions run
    on a thread, off the event loop. ``register=False`` makes the tool without adding it to
    the default registry (hand it to a run with ``tools=[...]``).
    """

    def make(fn: Callable[..., Any]) -> Tool:
        made = from_function(fn, name=name, provider=provider, description=description,
                             timeout=timeout)
        if register:
            from .registry import default_registry

            default_registry().add(made)
        return made

    return make(function) if function is not None else make


def from_function(fn: Callable[..., Any], *, name: str | None = None, provider: str = PYTHON,
                  description: str | None = None, timeout: float | None = None) -> Tool:
    """The :class:`Tool` of a typed Python function (not registered)."""
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise TypeError(f"@tool needs a function, got {type(fn).__name__}")
    tool_name: str = name or str(getattr(fn, "__name__", ""))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool_name or ""):
        raise ValueError(f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-' "
                         "(what model APIs accept); give one: @tool(name='...')")
    summary, described = parse_docstring(inspect.getdoc(fn) or "")
    model = _arguments_model(fn, tool_name, described)
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    schema["type"] = "object"
    asynchronous = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        type(fn).__call__)

    async def invoke(arguments: dict[str, Any], context: ToolContext) -> Any:
        try:
            parsed = model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise ToolError(f"invalid arguments for tool {tool_name!r}: {validation_errors(exc)}",
                            hint=f"pass arguments matching {_signature(schema)}",
                            kind="ToolArgumentsError") from None
        values = {k: getattr(parsed, k) for k in type(parsed).model_fields}
        if asynchronous:
            return await fn(**values)
        # Blocking code never holds the event loop.
        return await asyncio.to_thread(fn, **values)

    return Tool(tool_name, description if description is not None else summary, schema,
                invoke, provider=provider, timeout=timeout, function=fn, kind="python")


def _arguments_model(fn: Callable[..., Any], tool_name: str,
                     described: Mapping[str, str]) -> type[pydantic.BaseModel]:
    signature = inspect.signature(fn)
    try:
        hints = get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward references: fall back to Any
        hints = {}
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.kind is param.POSITIONAL_ONLY:
            raise ValueError(f"tool {tool_name!r}: positional-only argument {param.name!r} "
                             "cannot be passed by name; make it a normal argument")
        hint = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hint, pydantic.Field(default, description=described.get(
            param.name)))
    # Unknown arguments are an error the model can read, not silently dropped.
    return pydantic.create_model(f"{tool_name}_arguments",
                                 __config__=pydantic.ConfigDict(extra="forbid"), **fields)


def validation_errors(exc: pydantic.ValidationError) -> str:
    """A pydantic error as one line a model can read: ``field: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                     for e in exc.errors())


def _signature(schema: Mapping[str, Any]) -> str:
    required = set(schema.get("required", []))
    parts = [f"{name}{'' if name in required else '?'}: {prop.get('type', 'any')}"
             for name, prop in schema.get("properties", {}).items()]
    return "{" + ", ".join(parts) + "}"


# -- docstrings --------------------------------------------------------------------------------

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params)\s*:?\s*$", re.IGNORECASE)
_OTHER = re.compile(r"^(Returns?|Raises|Yields|Examples?|Notes?|See Also)\s*:?\s*$", re.IGNORECASE)
_GOOGLE = re.compile(r"^\s*\*{0,2}(\w+)\*{0,2}\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_REST = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_NUMPY = re.compile(r"^(\w+)\s+:(\s.*)?$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """``(description, {argument: description})`` from a Google, NumPy or reST docstring."""
    lines = doc.strip().splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    section = "summary"
    for raw in lines:
        line = raw.rstrip()
        stripped = line.strip()
        rest = _REST.match(line)
        if rest:
            section, current = "params", rest.group(1)
            params[current] = rest.group(2).strip()
            continue
        if _SECTION.match(stripped):
            section, current = "params", None
            continue
        if _OTHER.match(stripped) or stripped.startswith(":return"):
            section, current = "other", None
            continue
        if set(stripped) <= {"-"} and stripped:
            continue  # NumPy underlines
        if section == "summary":
            summary.append(stripped)
        elif section == "params":
            google = _GOOGLE.match(line)
            numpy = _NUMPY.match(line)
            indent = len(line) - len(line.lstrip())
            if numpy:
                current = numpy.group(1)
                params[current] = ""
            elif google and (current is None or indent <= _indent_of(lines, current)):
                current = google.group(1)
                params[current] = google.group(2).strip()
            elif current is not None and stripped:
                params[current] = f"{params[current]} {stripped}".strip()
    text = " ".join(summary).strip()
    paragraphs = "\n".join(summary).strip().split("\n\n")
    return (paragraphs[0].replace("\n", " ").strip() if paragraphs else text), params


def _indent_of(lines: list[str], name: str) -> int:
    for line in lines:
        match = _GOOGLE.match(line)
        if match and match.group(1) == name:
            return len(line) - len(line.lstrip())
    return 0
