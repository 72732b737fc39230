"""Checks node configs share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def unique(values: Iterable[str], what: str) -> None:
    """ValueError naming the first of ``values`` given twice (a branch id, an output name)."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is given twice")
        seen.add(value)


def empty_list(value: Any) -> Any:
    """A null list as an empty one, as Dify's models read it (``convert_none_*``): use as
    ``Annotated[list[X], BeforeValidator(empty_list)]``."""
    return [] if value is None else value


def empty_text(value: Any) -> Any:
    """A null text as an empty one, as Dify's models read it."""
    return "" if value is None else value
