"""The variable pool (every node's outputs, plus sys / env / conversation) and templates."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cellwire.model.selectors import DIFY_REFERENCE

MISSING: Any = object()


class VariableNotFound(LookupError):
    def __init__(self, selector: Sequence[str], reason: str):
        self.selector = tuple(selector)
        super().__init__(f"{'.'.join(self.selector)}: {reason}")


class VariablePool:
    """Values by selector ``[node_id, var, *path]``.

    Each node's outputs are stored as one dict replaced whole, so a child pool for an
    iteration round is a shallow copy: its writes stay local, while the ``conversation``
    dict is shared, so assignments to conversation variables reach the parent run.
    """

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, dict[str, Any]] | None = None):
        self._data: dict[str, dict[str, Any]] = data if data is not None else {}

    def child(self) -> VariablePool:
        return VariablePool(dict(self._data))

    def set_outputs(self, node_id: str, outputs: dict[str, Any]) -> None:
        self._data[node_id] = outputs

    def set(self, node_id: str, name: str, value: Any) -> None:
        self._data.setdefault(node_id, {})[name] = value

    def remove(self, node_id: str) -> None:
        self._data.pop(node_id, None)

    def outputs(self, node_id: str) -> dict[str, Any] | None:
        return self._data.get(node_id)

    def has(self, selector: Sequence[str]) -> bool:
        return self.get(selector, None) is not None

    def get(self, selector: Sequence[str], default: Any = MISSING) -> Any:
        """The value at ``selector``; ``default`` (if given) when any part is missing."""
        node = self._data.get(selector[0])
        if node is None:
            if default is not MISSING:
                return default
            raise VariableNotFound(selector, f"node {selector[0]!r} has no outputs (yet)")
        value: Any = node
        for depth, key in enumerate(selector[1:], start=1):
            try:
                value = _step(value, key)
            except (KeyError, IndexError, AttributeError, TypeError, ValueError):
                if default is not MISSING:
                    return default
                have = ", ".join(map(str, value)) if isinstance(value, Mapping) else type(value).__name__
                raise VariableNotFound(
                    selector, f"no {key!r} in {'.'.join(selector[:depth])} (it has: {have})"
                ) from None
        return value

    def namespace(self) -> dict[str, dict[str, Any]]:
        """The pool as a read-only mapping for templates: ``{{ node.var }}``."""
        return self._data

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._data.items()}


def _step(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value[key]
    if isinstance(value, (list, tuple)):
        return value[int(key)]
    return getattr(value, key)


def to_text(value: Any) -> str:
    """How a value reads inside a template (Dify's segment text)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def render_dify(text: str, pool: VariablePool) -> str:
    """Replace each ``{{#node.var#}}`` with its value; a missing value reads as empty."""
    if "{{#" not in text:
        return text
    return DIFY_REFERENCE.sub(
        lambda m: to_text(pool.get(m.group(1).split("."), None)), text
    )


_jinja = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_compiled: dict[str, jinja2.Template] = {}
_JINJA_MARK = re.compile(r"\{\{\s*[A-Za-z_(\[\"']|\{%")


def has_jinja(text: str) -> bool:
    return _JINJA_MARK.search(text) is not None


def compile_jinja(text: str) -> jinja2.Template:
    """A sandboxed Jinja template, compiled once per text (raises TemplateSyntaxError)."""
    template = _compiled.get(text)
    if template is None:
        if len(_compiled) > 4096:
            _compiled.clear()
        template = _compiled[text] = _jinja.from_string(text)
    return template


def render(text: str, pool: VariablePool, extra: Mapping[str, Any] | None = None) -> str:
    """Render both reference forms: Dify's ``{{#a.b#}}`` and Jinja's ``{{ a.b }}``.

    A value inserted by a Dify reference is never parsed as Jinja: it goes in as a Jinja
    variable, so a user's ``{{ ... }}`` in a query stays text.
    """
    if not has_jinja(text):
        return render_dify(text, pool)
    values: list[str] = []

    def hold(match: re.Match[str]) -> str:
        values.append(to_text(pool.get(match.group(1).split("."), None)))
        return f"{{{{ __cw_refs[{len(values) - 1}] }}}}"

    if "{{#" in text:
        text = DIFY_REFERENCE.sub(hold, text)
    namespace: Mapping[str, Any] = pool.namespace()
    if extra or values:
        namespace = {**namespace, **(extra or {}), "__cw_refs": values}
    return compile_jinja(text).render(namespace)
