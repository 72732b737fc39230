"""Built-in tools: the current time (Dify's ``time/current_time``), arithmetic without
``eval``, and a URL fetched as text through the run's shared HTTP client and network policy."""

from __future__ import annotations

import ast
import html
import math
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .context import ToolContext
from .http import fetch
from .tool import Tool, ToolError


async def _current_time(arguments: dict[str, Any], context: ToolContext) -> str:
    fmt = str(arguments.get("format") or "%Y-%m-%d %H:%M:%S")
    zone = str(arguments.get("timezone") or "UTC")
    try:
        tz = UTC if zone == "UTC" else ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown timezone {zone!r}", hint="give an IANA name such as "
                        "'Europe/Berlin' or 'UTC'", kind="ToolArgumentsError") from None
    return datetime.now(tz).strftime(fmt)


current_time = Tool(
    "current_time", "The current date and time in a timezone, formatted with strftime.",
    {"type": "object", "properties": {
        "format": {"type": "string", "description": "strftime format",
                   "default": "%Y-%m-%d %H:%M:%S"},
        "timezone": {"type": "string", "description": "IANA timezone", "default": "UTC"}}},
    _current_time, provider="time", kind="builtin")


# -- arithmetic ---------------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": round, "min": min, "max": max, "sqrt": math.sqrt, "exp": math.exp,
    "log": math.log, "log10": math.log10, "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "floor": math.floor, "ceil": math.ceil}
_CONSTANTS = {"pi": math.pi, "e": math.e}
#: Exponents and magnitudes past these are refused: ``9**9**9`` would hold the CPU for hours.
_MAX_EXPONENT = 1000
_MAX_DIGITS = 10_000
_MAX_LENGTH = 1000


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression: numbers, ``+ - * / // % **``, parentheses,
    ``pi``, ``e`` and a few functions (``sqrt``, ``log``, ``sin``, ``round``, ...). Parsed,
    never ``eval``-ed: names, attributes and calls outside that list are refused."""
    if len(expression) > _MAX_LENGTH:
        raise ToolError(f"the expression has more than {_MAX_LENGTH} characters",
                        kind="ToolArgumentsError")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}",
                        hint="write it like '2 * (3 + 4) / sqrt(2)'",
                        kind="ToolArgumentsError") from None
    return _value(tree.body)


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise ToolError(f"the exponent {right} is larger than {_MAX_EXPONENT}",
                            kind="ToolArgumentsError")
        try:
            result = _BINARY[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError, ValueError) as exc:
            raise ToolError(f"cannot compute it: {exc}", kind="ToolArgumentsError") from None
        if isinstance(result, int) and result.bit_length() > _MAX_DIGITS * 3.33:
            raise ToolError("the result has too many digits", kind="ToolArgumentsError")
        return result
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS and not node.keywords):
        try:
            return _FUNCTIONS[node.func.id](*(_value(a) for a in node.args))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ToolError(f"{node.func.id}(): {exc}", kind="ToolArgumentsError") from None
    shown = ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__
    raise ToolError(f"{shown!r} is not allowed in an arithmetic expression",
                    hint=f"use numbers, + - * / // % **, parentheses, pi, e and "
                         f"{', '.join(sorted(_FUNCTIONS))}", kind="ToolArgumentsError")


async def _calculate(arguments: dict[str, Any], context: ToolContext) -> str:
    expression = arguments.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("'expression' is missing", hint="pass {'expression': '2 + 2'}",
                        kind="ToolArgumentsError")
    result = evaluate(expression)
    return repr(result) if isinstance(result, float) else str(result)


calculate = Tool(
    "calculate", "Evaluate an arithmetic expression (numbers, + - * / // % **, parentheses, "
    "pi, e, sqrt, log, sin, cos, tan, round, abs, min, max, floor, ceil).",
    {"type": "object", "properties": {"expression": {
        "type": "string", "description": "e.g. '2 * (3 + 4) / sqrt(2)'"}},
     "required": ["expression"]},
    _calculate, provider="builtin", kind="builtin")


# -- fetch a URL ----------------------------------------------------------------------------------

_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.DOTALL | re.IGNORECASE)
_SPACE = re.compile(r"[ \t\r\f\v]+")
_LINES = re.compile(r"\n\s*\n+")


def html_text(markup: str) -> str:
    """The readable text of an HTML page (tags, scripts and styles dropped)."""
    text = html.unescape(_TAGS.sub(" ", markup))
    text = _SPACE.sub(" ", text)
    return _LINES.sub("\n\n", "\n".join(line.strip() for line in text.splitlines())).strip()


async def _fetch_url(arguments: dict[str, Any], context: ToolContext) -> str:
    url = arguments.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ToolError("'url' is missing", hint="pass {'url': 'https://...'}",
                        kind="ToolArgumentsError")
    response = await fetch(context, "GET", url.strip(), tool="fetch_url")
    body = response.text
    kind = response.headers.get("content-type", "")
    if response.status_code >= 400:
        raise ToolError(f"GET {url} answered {response.status_code}",
                        hint="check the URL", kind="ToolHTTPError")
    return html_text(body) if "html" in kind.lower() else body


fetch_url = Tool(
    "fetch_url", "Fetch a web page or document by URL and return it as text.",
    {"type": "object", "properties": {"url": {"type": "string",
                                              "description": "an http(s) URL"}},
     "required": ["url"]},
    _fetch_url, provider="builtin", kind="builtin")

#: The built-in tools every registry made by :func:`default_registry` starts with.
BUILTINS = [current_time, calculate, fetch_url]
