"""Dify's conditions: the comparison operators shared by if-else, loop and list-operator.

A condition reads a value (by ``variable_selector``, or by ``key`` on a list item) and compares
it with ``value`` using one of Dify's operators. Missing values read as None, and each operator
answers for None as Dify's condition processor does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from cellwire.engine.node import NodeError
from cellwire.engine.templates import render_references
from cellwire.model import NodeConfig

Getter = Callable[[Sequence[str]], Any]
LogicalOperator = Literal["and", "or"]

#: Every operator Dify's UI offers, plus the ASCII spellings some DSL files use.
OPERATORS: tuple[str, ...] = (
    "contains", "not contains", "start with", "end with", "is", "is not", "empty", "not empty",
    "in", "not in", "all of", "=", "≠", "!=", ">", "<", "≥", ">=", "≤", "<=", "null",
    "not null", "exists", "not exists",
)
_ASCII = {"!=": "≠", ">=": "≥", "<=": "≤"}


class SubCondition(NodeConfig):
    """A condition on one attribute (``key``) of the items of an array (Dify's file filters)."""

    key: str = ""
    comparison_operator: str = "contains"
    value: Any = None


class SubVariableCondition(NodeConfig):
    logical_operator: LogicalOperator = "and"
    conditions: list[SubCondition] = Field(default_factory=list)


class Condition(NodeConfig):
    """One Dify condition: ``variable_selector`` ``comparison_operator`` ``value``."""

    variable_selector: list[str] | None = None
    #: For list-operator filters and sub-conditions: the item attribute to compare ('' = item).
    key: str = ""
    comparison_operator: str = "contains"
    value: Any = None
    varType: str | None = None
    sub_variable_condition: SubVariableCondition | None = None


def evaluate(conditions: Sequence[Condition], logical_operator: str, get: Getter, *,
             field: str = "conditions") -> bool:
    """Whether ``conditions`` hold, combined by ``logical_operator`` ('and' | 'or').

    ``get(selector)`` reads a value from the pool and returns None when it is missing. An empty
    list of conditions holds for 'and' and fails for 'or', as ``all`` / ``any`` do in Dify.
    """
    if logical_operator not in ("and", "or"):
        raise NodeError(f"unknown logical operator {logical_operator!r}",
                        field="logical_operator", hint="use 'and' or 'or'")
    # Check every operator up front: a typo must fail even when an earlier condition decides.
    for i, cond in enumerate(conditions):
        normalise_operator(cond.comparison_operator, f"{field}[{i}].comparison_operator")
    results = (
        evaluate_one(cond, get, field=f"{field}[{i}]") for i, cond in enumerate(conditions)
    )
    return all(results) if logical_operator == "and" else any(results)


def evaluate_one(condition: Condition, get: Getter, *, field: str = "condition") -> bool:
    """Whether one condition holds for the value its ``variable_selector`` names."""
    selector = condition.variable_selector
    if not selector:
        raise NodeError("the condition names no variable", field=f"{field}.variable_selector",
                        hint="set variable_selector, e.g. ['start', 'query']")
    actual = get(selector)
    expected = render_value(condition.value, get)
    sub = condition.sub_variable_condition
    if (sub is not None and sub.conditions and isinstance(actual, list)
            and normalise_operator(condition.comparison_operator, field) in
            ("contains", "not contains", "all of")):
        return _sub_conditions(actual, sub, get, field=f"{field}.sub_variable_condition")
    return compare(condition.comparison_operator, actual, expected,
                   field=f"{field}.comparison_operator")


def item_matches(condition: Condition | SubCondition, item: Any, get: Getter | None = None, *,
                 field: str = "condition") -> bool:
    """Whether ``item`` (or its attribute ``condition.key``) meets the condition."""
    actual = attribute(item, condition.key)
    expected = render_value(condition.value, get) if get is not None else condition.value
    return compare(condition.comparison_operator, actual, expected,
                   field=f"{field}.comparison_operator")


def attribute(item: Any, key: str) -> Any:
    """``item[key]`` or ``item.key``; the item itself for an empty key; None when absent."""
    if not key:
        return item
    if isinstance(item, Mapping):
        if key not in item and item.get("dify_model_identity") == "__dify__file__":
            # Dify's file attributes as its list operator names them.
            key = {"name": "filename", "url": "remote_url"}.get(key, key)
        return item.get(key)
    return getattr(item, key, None)


def render_value(value: Any, get: Getter | None) -> Any:
    """Resolve ``{{#node.var#}}`` references inside a condition's value (strings and lists)."""
    if get is None:
        return value
    if isinstance(value, str):
        return render_references(value, get)
    if isinstance(value, list):
        return [render_value(v, get) for v in value]
    return value


def _sub_conditions(items: list[Any], sub: SubVariableCondition, get: Getter, *,
                    field: str) -> bool:
    # Dify: a sub-condition holds when any item meets it, or all items for a 'not' operator.
    results = []
    for i, cond in enumerate(sub.conditions):
        expected = render_value(cond.value, get)
        if cond.key == "extension" and isinstance(expected, str) and expected:
            expected = expected.lower()
            expected = expected if expected.startswith(".") else "." + expected
        hits = [
            compare(cond.comparison_operator, attribute(item, cond.key), expected,
                    field=f"{field}.conditions[{i}].comparison_operator")
            for item in items
        ]
        results.append(all(hits) if "not" in cond.comparison_operator else any(hits))
    return all(results) if sub.logical_operator == "and" else any(results)


def normalise_operator(operator: str, field: str = "comparison_operator") -> str:
    """The canonical spelling of ``operator``; an unknown operator raises :class:`NodeError`."""
    op = _ASCII.get(operator, operator)
    if op not in _COMPARE:
        raise NodeError(f"unknown comparison operator {operator!r}", field=field,
                        hint=f"use one of: {', '.join(OPERATORS)}")
    return op


def compare(operator: str, actual: Any, expected: Any, *,
            field: str = "comparison_operator") -> bool:
    """Whether ``actual <operator> expected`` holds, with Dify's rules for each operator."""
    op = normalise_operator(operator, field)
    try:
        return _COMPARE[op](actual, expected)
    except _Mismatch as exc:
        raise NodeError(f"{op!r} cannot compare {_short(actual)} with {_short(expected)}: {exc}",
                        field=field, hint=exc.hint) from None


class _Mismatch(Exception):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- the operators ------------------------------------------------------------------------

def _contains(actual: Any, expected: Any) -> bool:
    if not actual:
        return False
    if isinstance(actual, str):
        return _text(expected) in actual
    if isinstance(actual, (list, tuple)):
        return any(_same(item, expected) for item in actual)
    if isinstance(actual, Mapping):
        return _text(expected) in actual
    raise _Mismatch("needs a string or an array", "compare a string or an array variable")


def _not_contains(actual: Any, expected: Any) -> bool:
    return not actual or not _contains(actual, expected)


def _start_with(actual: Any, expected: Any) -> bool:
    if not actual:
        return False
    return _need_str(actual).startswith(_text(expected))


def _end_with(actual: Any, expected: Any) -> bool:
    if not actual:
        return False
    return _need_str(actual).endswith(_text(expected))


def _is(actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    if isinstance(actual, bool):
        return actual == _as_bool(expected)
    return _text(actual) == _text(expected)


def _is_not(actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    return not _is(actual, expected)


def _empty(actual: Any, expected: Any) -> bool:
    # Dify's rule: anything falsy is empty, 0 and false included.
    return not actual


def _not_empty(actual: Any, expected: Any) -> bool:
    return not _empty(actual, expected)


def _in(actual: Any, expected: Any) -> bool:
    if actual is None or actual == "":
        return False
    return any(_same(actual, option) for option in _as_list(expected))


def _not_in(actual: Any, expected: Any) -> bool:
    return actual is None or actual == "" or not _in(actual, expected)


def _all_of(actual: Any, expected: Any) -> bool:
    if not actual:
        return False
    if isinstance(actual, str):
        return all(_text(option) in actual for option in _as_list(expected))
    if not isinstance(actual, (list, tuple)):
        raise _Mismatch("needs an array", "compare an array variable")
    return all(any(_same(item, option) for item in actual) for option in _as_list(expected))


def _numeric(test: Callable[[float, float], bool]) -> Callable[[Any, Any], bool]:
    def run(actual: Any, expected: Any) -> bool:
        if actual is None:
            return False
        return test(_number(actual, "the variable"), _number(expected, "the value"))
    return run


def _equal(actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    if isinstance(actual, bool):
        return actual == _as_bool(expected)
    try:
        return _number(actual, "the variable") == _number(expected, "the value")
    except _Mismatch:
        if isinstance(actual, str):
            return actual == _text(expected)
        raise


def _not_equal(actual: Any, expected: Any) -> bool:
    if actual is None:
        return False
    return not _equal(actual, expected)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "contains": _contains,
    "not contains": _not_contains,
    "start with": _start_with,
    "end with": _end_with,
    "is": _is,
    "is not": _is_not,
    "empty": _empty,
    "not empty": _not_empty,
    "in": _in,
    "not in": _not_in,
    "all of": _all_of,
    "=": _equal,
    "≠": _not_equal,
    ">": _numeric(lambda a, b: a > b),
    "<": _numeric(lambda a, b: a < b),
    "≥": _numeric(lambda a, b: a >= b),
    "≤": _numeric(lambda a, b: a <= b),
    "null": lambda actual, _expected: actual is None,
    "not null": lambda actual, _expected: actual is not None,
    "exists": lambda actual, _expected: actual is not None,
    "not exists": lambda actual, _expected: actual is None,
}


# -- conversions --------------------------------------------------------------------------

def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _need_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Mismatch(f"needs a string, not {type(value).__name__}",
                        "use this operator on a string variable")
    return value


def _same(item: Any, expected: Any) -> bool:
    """Equality across the string / number split of UI values: 3 matches '3'."""
    if item == expected:
        return True
    if isinstance(item, (dict, list)) or isinstance(expected, (dict, list)):
        return False
    return _text(item) == _text(expected)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [part.strip() for part in text.split(",")] if "," in text else [text]
    return [] if value is None else [value]


def to_number(value: Any) -> float | None:
    """``value`` as a number (numeric strings converted); None when it is not one."""
    try:
        return _number(value, "value")
    except _Mismatch:
        return None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if not math.isnan(number):
                return number
    raise _Mismatch(f"{what} {_short(value)} is not a number",
                    "compare numbers, or use 'is' / 'contains' for text")
