"""Built-in tools: the current time (Dify's ``time/current_time``), arithmetic without
``eval``, a URL fetched as text through the run's shared HTTP client and network policy, and
a search of the project's knowledge bases (``cellwire kb``) through the run's knowledge
service."""

from __future__ import annotations

import ast
import asyncio
import html
import math
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic

from .context import ToolContext
from .http import fetch
from .registry import ToolOutput
from .tool import Tool, ToolError, validation_errors


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


# -- search a knowledge base ----------------------------------------------------------------------

#: The most chunks one search returns: more would crowd a model's context.
MAX_TOP_K = 20


class _SearchArguments(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    query: str = pydantic.Field(min_length=1)
    knowledge_base: str | None = None
    top_k: int = pydantic.Field(4, ge=1, le=MAX_TOP_K)
    mode: Literal["fulltext", "vector", "hybrid"] | None = None


async def _search_knowledge(arguments: dict[str, Any], context: ToolContext) -> Any:
    try:
        args = _SearchArguments.model_validate(arguments)
    except pydantic.ValidationError as exc:
        raise ToolError(f"invalid arguments for tool 'search_knowledge': {validation_errors(exc)}",
                        hint="pass {'query': '...'} and optionally 'knowledge_base', "
                             f"'top_k' (1 to {MAX_TOP_K}) and 'mode' ('fulltext', 'vector' "
                             "or 'hybrid')", kind="ToolArgumentsError") from None
    knowledge = context.knowledge
    if knowledge is None:
        # Called outside a run: the project's knowledge bases, as the runner opens them.
        from cellwire.services.knowledge import Knowledge

        knowledge = Knowledge()
    name = args.knowledge_base or await _only_base(knowledge)
    from cellwire.services.knowledge import EmbeddingUnavailable, KnowledgeBaseNotFound

    try:
        documents = await knowledge.retrieve([name], args.query.strip(), top_k=args.top_k,
                                             mode=args.mode)
    except KnowledgeBaseNotFound as exc:
        raise ToolError(str(exc), hint="name a knowledge base that exists in 'knowledge_base'",
                        kind="KnowledgeBaseNotFound") from None
    except EmbeddingUnavailable as exc:
        raise ToolError(f"knowledge base {name!r} cannot embed the query: {exc}",
                        hint="search with mode 'fulltext', or make its embedding model "
                             "reachable", kind="EmbeddingUnavailable") from None
    return ToolOutput(_as_text(name, args.query, documents), [],
                      [{"knowledge_base": name, "query": args.query, "documents": documents}],
                      {"documents": documents})


async def _only_base(knowledge: Any) -> str:
    """The name of the one knowledge base there is, when the call names none."""
    listing = getattr(knowledge, "list", None)
    names = [b.name for b in await asyncio.to_thread(listing)] if callable(listing) else None
    if names is not None and len(names) == 1:
        return names[0]
    there = f" (there: {', '.join(names)})" if names else ""
    if names == []:
        raise ToolError("there is no knowledge base to search", hint="create one: `cellwire kb "
                        "create NAME` and `cellwire kb add NAME FILE...`",
                        kind="KnowledgeBaseNotFound")
    raise ToolError(f"name the knowledge base to search in 'knowledge_base'{there}",
                    hint="fix it in the tool's settings (a tool node's tool_configurations, "
                         "an agent tool's settings) so the model need not choose",
                    kind="ToolArgumentsError")


def _as_text(name: str, query: str, documents: list[dict[str, Any]]) -> str:
    """What a model reads: each chunk with its document and score, best first."""
    if not documents:
        return f"Nothing in knowledge base {name!r} matches {query!r}."
    parts = []
    for index, document in enumerate(documents, 1):
        score = document.get("metadata", {}).get("score")
        shown = f", score {score:.2f}" if isinstance(score, (int, float)) else ""
        parts.append(f"[{index}] {document.get('title') or 'untitled'}{shown}\n"
                     f"{document.get('content', '')}")
    return "\n\n".join(parts)


search_knowledge = Tool(
    "search_knowledge", "Search a knowledge base (documents added with `cellwire kb`) and "
    "return its passages that best match a query, best first.",
    {"type": "object", "properties": {
        "query": {"type": "string", "description": "what to look for"},
        "knowledge_base": {"type": "string", "description": "the knowledge base's name or "
                           "id (may be left out when there is only one)"},
        "top_k": {"type": "integer", "description": "how many passages to return",
                  "default": 4, "minimum": 1, "maximum": MAX_TOP_K},
        "mode": {"type": "string", "enum": ["fulltext", "vector", "hybrid"],
                 "description": "how to search: by words (fulltext), by meaning (vector) or "
                 "both (hybrid, the default when the base has an embedding model); a base "
                 "without one always searches by words"}},
     "required": ["query"]},
    _search_knowledge, provider="builtin", kind="builtin")

#: The built-in tools every registry made by :func:`default_registry` starts with.
BUILTINS = [current_time, calculate, fetch_url, search_knowledge]
