"""The variable pool: every node's outputs, plus sys / env / conversation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
            if type(value) is dict:
                # Most steps: a miss (nodes probe optional values, such as sys.files) costs
                # a lookup here, where a raised KeyError cost several microseconds.
                found = value.get(key, MISSING)
                if found is not MISSING:
                    value = found
                    continue
            else:
                try:
                    value = _step(value, key)
                    continue
                except (KeyError, IndexError, AttributeError, TypeError, ValueError):
                    pass
            if default is not MISSING:
                return default
            have = ", ".join(map(str, value)) if isinstance(value, Mapping) else type(value).__name__
            raise VariableNotFound(
                selector, f"no {key!r} in {'.'.join(selector[:depth])} (it has: {have})")
        return value

    def namespace(self) -> dict[str, dict[str, Any]]:
        """The pool as a mapping for Jinja templates: ``{{ node.var }}``."""
        return self._data

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self._data.items()}


def _step(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value[key]
    if isinstance(value, (list, tuple)):
        return value[int(key)]
    return getattr(value, key)
