"""Variable selectors and template references.

A selector names a value in the variable pool: ``[node_id, var, *path]``. Plain text fields
refer to values only in Dify's form ``{{#node_id.var.path#}}``; jinja2-mode fields (a
template-transform's template, an llm prompt with ``edition_type: jinja2``) may also read
``{{ node_id.var }}``. Rendering lives in ``cellwire.engine.templates``; this module only
finds references, so it keeps a parse-only Jinja environment (the model does not import the
engine).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

Selector = tuple[str, ...]

#: Node ids the engine owns; a user node may not take one of these ids.
RESERVED_PREFIXES = ("sys", "env", "conversation")

# Dify's own pattern (graphon variables/template_resolution.py), so what Dify accepts, we accept.
DIFY_REFERENCE = re.compile(
    r"\{\{#([a-zA-Z0-9_]{1,50}(?:\.[a-zA-Z_][a-zA-Z0-9_]{0,29}){1,10})#\}\}"
)
# Dify's placeholders that are not pool references.
_DIFY_SPECIAL = {"context", "histories"}


def as_selector(value: str | Sequence[str]) -> Selector:
    """Normalise ``"node.var.path"`` or ``["node", "var", ...]`` to a selector tuple."""
    parts = tuple(value.split(".")) if isinstance(value, str) else tuple(str(p) for p in value)
    if len(parts) < 2 or not all(parts):
        raise ValueError(
            f"selector {list(parts)!r} needs at least a node id and a variable name, "
            "e.g. ['start', 'query']"
        )
    return parts


def dify_references(text: str) -> Iterator[Selector]:
    """Selectors referenced as ``{{#node.var#}}`` in ``text``."""
    for match in DIFY_REFERENCE.finditer(text):
        parts = tuple(match.group(1).split("."))
        if parts[0] not in _DIFY_SPECIAL:
            yield parts


@lru_cache(maxsize=1)
def _jinja_parser() -> jinja2.Environment:
    """Parses, never renders: references are read off the syntax tree. Made on first use:
    jinja2 takes ~15 ms to import, and only Jinja fields need it."""
    import jinja2

    return jinja2.Environment()


@lru_cache(maxsize=1024)
def _jinja_references(text: str) -> tuple[Selector, ...]:
    import jinja2.nodes

    try:
        # Dify's `{{#a.b#}}` reads as a broken Jinja comment: take those out first.
        ast = _jinja_parser().parse(DIFY_REFERENCE.sub("", text))
    except jinja2.TemplateSyntaxError:
        return ()
    bound = {n.name for n in ast.find_all(jinja2.nodes.Name) if n.ctx in ("store", "param")}
    found: list[Selector] = []
    for getattr_node in ast.find_all(jinja2.nodes.Getattr):
        chain: list[str] = [getattr_node.attr]
        inner = getattr_node.node
        while isinstance(inner, jinja2.nodes.Getattr):
            chain.append(inner.attr)
            inner = inner.node
        if isinstance(inner, jinja2.nodes.Name) and inner.name not in bound:
            found.append((inner.name, *reversed(chain)))
    # Only keep maximal chains: `a.b.c` also contains the Getattr `a.b`.
    maximal = [s for s in found if not any(o != s and o[: len(s)] == s for o in found)]
    return tuple(dict.fromkeys(maximal))


def jinja_references(text: str) -> Iterator[Selector]:
    """Selectors read as ``{{ node.var }}`` (attribute chains on free names) in a jinja2-mode
    ``text``; plain text has no such references."""
    if "{" in text:
        yield from _jinja_references(text)


def template_references(text: str, *, jinja: bool = False) -> list[Selector]:
    """Every selector ``text`` refers to, first occurrence first: its ``{{#node.var#}}``
    references, and with ``jinja`` (a jinja2-mode field) its ``{{ node.var }}`` ones too."""
    if not jinja:
        return list(dict.fromkeys(dify_references(text)))
    return list(dict.fromkeys([*dify_references(text), *jinja_references(text)]))


def format_selector(selector: Sequence[str]) -> str:
    return ".".join(selector)
