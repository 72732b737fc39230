"""Dify's metadata filtering conditions, evaluated against each document's metadata.

A condition is ``{name, comparison_operator, value}``; conditions combine with
``logical_operator`` ``and`` / ``or``. Strings compare with contains, not contains, start
with, end with, is, is not, empty, not empty (and in / not in, a comma-separated list);
numbers with =, ≠, >, <, ≥, ≤; times (Unix seconds or ISO dates) with before and after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

OPERATORS = (
    "contains", "not contains", "start with", "end with", "is", "is not", "empty",
    "not empty", "in", "not in", "=", "≠", "!=", ">", "<", "≥", ">=", "≤", "<=", "before",
    "after",
)


class Condition(BaseModel):
    name: str
    comparison_operator: str
    value: Any = None


class Conditions(BaseModel):
    logical_operator: Literal["and", "or"] = "and"
    conditions: list[Condition] = Field(default_factory=list)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> float | None:
    number = _number(value)
    if number is not None:
        return number
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def check(condition: Condition, metadata: Mapping[str, Any]) -> bool:
    """Whether one document's ``metadata`` meets ``condition``."""
    op, expected = condition.comparison_operator, condition.value
    if op not in OPERATORS:
        raise ValueError(f"metadata condition on {condition.name!r}: unknown comparison_operator "
                         f"{op!r}; use one of {', '.join(OPERATORS)}")
    actual = metadata.get(condition.name)
    if op == "empty":
        return actual in (None, "", [])
    if op == "not empty":
        return actual not in (None, "", [])
    if actual is None:
        return op in ("not contains", "is not", "not in", "≠", "!=")
    text, want = str(actual), "" if expected is None else str(expected)
    if op == "contains":
        return want in text
    if op == "not contains":
        return want not in text
    if op == "start with":
        return text.startswith(want)
    if op == "end with":
        return text.endswith(want)
    if op in ("is", "="):
        a, b = _number(actual), _number(expected)
        return a == b if op == "=" and a is not None and b is not None else text == want
    if op in ("is not", "≠", "!="):
        a, b = _number(actual), _number(expected)
        return a != b if op != "is not" and a is not None and b is not None else text != want
    if op in ("in", "not in"):
        options = expected if isinstance(expected, list) else \
            [part.strip() for part in want.split(",")]
        return (text in [str(o) for o in options]) == (op == "in")
    convert = _time if op in ("before", "after") else _number
    a, b = convert(actual), convert(expected)
    if a is None or b is None:
        return False
    return {">": a > b, "after": a > b, "<": a < b, "before": a < b, "≥": a >= b,
            ">=": a >= b, "≤": a <= b, "<=": a <= b}[op]


def matches(conditions: Conditions, metadata: Mapping[str, Any]) -> bool:
    results = (check(c, metadata) for c in conditions.conditions)
    return all(results) if conditions.logical_operator == "and" else any(results)


def allowed(conditions: Conditions | None,
            documents: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str] | None:
    """The ids of the documents that meet ``conditions``; None when there are none to meet."""
    if conditions is None or not conditions.conditions:
        return None
    return [doc_id for doc_id, metadata in documents if matches(conditions, metadata)]
