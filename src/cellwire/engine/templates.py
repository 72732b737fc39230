"""Templates as Dify renders them: references in plain text, Jinja in jinja2-mode fields.

Dify has two kinds of template field:

* **Plain text** (an answer, a basic llm prompt, http-request fields, instructions, tool
  inputs, condition values): only ``{{#node.var.path#}}`` references are replaced and every
  other character is literal, so ``{{ name }}`` or ``{{ x: 1 }}`` stay as written. A value
  reads as Dify's segment text (:func:`text_of`), and a reference to a variable the pool
  does not hold reads as its selector, ``node.var``. The answer node reads values as
  Markdown (:func:`markdown_of`) and a missing variable as nothing, as Dify streams it.
* **Jinja** (the template-transform node's ``template``, an llm prompt message with
  ``edition_type: jinja2``): a sandboxed Jinja2 template over named variables. cellwire also
  lets these templates read the pool as ``{{ node.var }}`` and replaces ``{{#node.var#}}``
  references first (Dify rejects those as a syntax error). Renders are bounded in size, work
  and time, and those that can loop run off the event loop (:mod:`.bounded_jinja`).

Both behaviours were checked against Dify's engine (graphon 0.8.0).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
import jinja2.nodes

from cellwire.model.selectors import DIFY_REFERENCE

from .bounded_jinja import BoundedEnvironment, Layered, TemplateLimits, can_loop, render_bounded
from .context import VariablePool

#: What a :data:`Lookup` returns for a variable the pool does not hold.
ABSENT: Any = object()
#: ``selector -> value``, or :data:`ABSENT` when the pool holds no such variable.
Lookup = Callable[[Sequence[str]], Any]

# Dify's File objects dump with this marker; cellwire's file dicts carry transfer_method.
_FILE_IDENTITY = "__dify__file__"


def is_file(value: Any) -> bool:
    """Whether ``value`` is a Dify file object (a mapping with ``transfer_method``)."""
    return isinstance(value, Mapping) and (
        "transfer_method" in value or value.get("dify_model_identity") == _FILE_IDENTITY)


# Built once: json.dumps with options builds a new encoder on every call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, default=str)
_INDENTED = json.JSONEncoder(ensure_ascii=False, default=str, indent=2)


def _json(value: Any, indent: int | None = None) -> str:
    return (_INDENTED if indent else _COMPACT).encode(value)


def text_of(value: Any) -> str:
    """How a value reads in a plain template: Dify's ``Segment.text``.

    Objects are JSON; arrays of strings are JSON and other arrays Python's ``str`` (as Dify
    does); empty arrays, files and None read as nothing; booleans as ``True``/``False``.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (dict, Mapping)):  # dict first: the common case, and a fast check
        return "" if is_file(value) else _json(value)
    if isinstance(value, (list, tuple)):
        items = list(value)
        if not items or all(is_file(v) for v in items):
            return ""
        if all(isinstance(v, str) for v in items):
            return _json(items)
        return str(items)
    return str(value)


def markdown_of(value: Any) -> str:
    """How a value reads in an answer: Dify's ``Segment.markdown``.

    Objects are indented JSON, arrays a ``- item`` list, files a Markdown link (an image
    link for images).
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (dict, Mapping)):
        return _file_markdown(value) if is_file(value) else _json(value, indent=2)
    if isinstance(value, (list, tuple)):
        if value and all(is_file(v) for v in value):
            return "\n".join(_file_markdown(v) for v in value)
        return "\n".join(f"- {item}" for item in value)
    return str(value)


def _file_markdown(file: Mapping[str, Any]) -> str:
    url = str(file.get("remote_url") or file.get("url") or "")
    name = str(file.get("filename") or "")
    if file.get("type") == "image":
        return f"![{name}]({url})"
    return f"[{name or url}]({url})"


def render_references(text: str, lookup: Lookup, *, answer: bool = False) -> str:
    """Replace each ``{{#node.var#}}`` in ``text`` with its value; nothing else changes.

    A value reads as :func:`text_of`, and a variable ``lookup`` reports :data:`ABSENT` as its
    selector (Dify's ``convert_template``). With ``answer``, as Dify's answer stream shows
    them: values as :func:`markdown_of`, an absent variable (a skipped branch) as nothing.
    """
    if "{{#" not in text:
        return text
    convert = markdown_of if answer else text_of

    def replace(match: re.Match[str]) -> str:
        value = lookup(match.group(1).split("."))
        if value is ABSENT:
            return "" if answer else match.group(1)
        return convert(value)

    return DIFY_REFERENCE.sub(replace, text)


def pool_lookup(pool: VariablePool) -> Lookup:
    """A :data:`Lookup` reading ``pool``."""
    return lambda selector: pool.get(selector, ABSENT)


# -- Jinja: one sandboxed environment, one bounded parse cache --------------------------------

#: Dify renders Jinja with jinja2's defaults (a trailing newline is dropped, nothing is
#: escaped); the sandbox keeps templates away from Python internals, its limits keep them
#: within the machine.
_ENVIRONMENT = BoundedEnvironment(autoescape=False)
_CACHE_SIZE = 1024


class _Parsed:
    """A jinja2-mode text, parsed once: its template, references, private reads, and whether
    it can loop."""

    __slots__ = ("loops", "private", "references", "template")

    def __init__(self, text: str):
        # A ``{{#node.var#}}`` reference becomes a read of ``__cw_refs[i]``: its value goes
        # in as a variable, so a ``{{ ... }}`` inside a value stays text.
        self.references: list[list[str]] = []

        def hold(match: re.Match[str]) -> str:
            self.references.append(match.group(1).split("."))
            return f"{{{{ __cw_refs[{len(self.references) - 1}] }}}}"

        source = DIFY_REFERENCE.sub(hold, text) if "{{#" in text else text
        ast = _ENVIRONMENT.parse(source)
        self.private = _private_attribute(ast) if "__" in text else None
        self.loops = can_loop(ast)
        self.template = _ENVIRONMENT.from_string(ast)


_parsed: OrderedDict[str, _Parsed] = OrderedDict()


def _parse(text: str) -> _Parsed:
    """The parse of ``text``, from a bounded cache (least recently used out first)."""
    entry = _parsed.get(text)
    if entry is not None:
        _parsed.move_to_end(text)
        return entry
    entry = _parsed[text] = _Parsed(text)
    if len(_parsed) > _CACHE_SIZE:
        _parsed.popitem(last=False)
    return entry


def compile_jinja(text: str) -> jinja2.Template:
    """``text`` compiled in the sandbox, once per text.

    Raises :class:`jinja2.TemplateSyntaxError`.
    """
    return _parse(text).template


def private_attribute(text: str) -> str | None:
    """The first ``__name`` attribute or key the template reads, or None.

    The sandbox renders such an access as empty text; callers refuse it up front so the
    author learns why. Raises :class:`jinja2.TemplateSyntaxError`.
    """
    return _parse(text).private


def _private_attribute(ast: jinja2.nodes.Template) -> str | None:
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        if isinstance(node, jinja2.nodes.Getattr):
            name: Any = node.attr
        elif isinstance(node, jinja2.nodes.Getitem) and isinstance(node.arg, jinja2.nodes.Const):
            name = node.arg.value
        else:
            continue
        if isinstance(name, str) and name.startswith("__"):
            return name
    return None


async def render_jinja(text: str, pool: VariablePool, names: Mapping[str, Any] | None = None,
                       *, limits: TemplateLimits | None = None) -> str:
    """Render a jinja2-mode field in the sandbox over ``names`` and the pool, within
    ``limits`` (default: :meth:`TemplateLimits.from_env`); on a thread when it loops long.

    ``names`` (a template's named variables) shadow node ids; ``{{#node.var#}}`` references
    read as their text. Raises :class:`jinja2.TemplateError` (syntax, sandbox),
    :class:`~cellwire.engine.bounded_jinja.TemplateLimitExceeded` and whatever an expression
    raises (e.g. ``TypeError``).
    """
    parsed = _parse(text)
    pool_names = pool.namespace()
    namespace: Mapping[str, Any] = pool_names
    if names or parsed.references:
        values = [text_of(v) if (v := pool.get(s, ABSENT)) is not ABSENT else ".".join(s)
                  for s in parsed.references]
        # A view over the pool, never a copy of it: its top level has a key per node.
        namespace = Layered({**(names or {}), "__cw_refs": values}, pool_names)
    return await render_bounded(parsed.template, namespace,
                                limits or TemplateLimits.from_env(), loops=parsed.loops)
