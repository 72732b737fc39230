"""Checks node configs share."""

from __future__ import annotations

from collections.abc import Iterable


def unique(values: Iterable[str], what: str) -> None:
    """ValueError naming the first of ``values`` given twice (a branch id, an output name)."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is given twice")
        seen.add(value)
