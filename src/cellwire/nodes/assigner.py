"""assigner: writes conversation variables (and a loop's variables) in the pool.

Version 1 (Dify's first form) makes one write: ``assigned_variable_selector`` gets the value at
``input_variable_selector`` by ``write_mode``. Version 2 applies ``items`` in order, each with
its own operation, so a later item sees what an earlier one wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import NodeConfig, node_type

from .conditions import to_number

OPERATIONS = (
    "over-write", "clear", "append", "extend", "set", "+=", "-=", "*=", "/=",
    "remove-first", "remove-last",
)
#: Operations that take no value.
_NO_VALUE = {"clear", "remove-first", "remove-last"}
#: Pool prefixes a run provides read-only.
_READ_ONLY = {"sys", "env"}


class AssignerItem(NodeConfig):
    variable_selector: list[str] = Field(default_factory=list)
    input_type: Literal["variable", "constant"] = "variable"
    operation: str = "over-write"
    value: Any = None


class AssignerConfig(NodeConfig):
    version: str | int = "1"
    # Version 2.
    items: list[AssignerItem] = Field(default_factory=list)
    # Version 1.
    assigned_variable_selector: list[str] | None = None
    write_mode: Literal["over-write", "append", "clear"] = "over-write"
    input_variable_selector: list[str] | None = None

    @property
    def v2(self) -> bool:
        return str(self.version) == "2" or (bool(self.items) and not self.assigned_variable_selector)


def _references(config: AssignerConfig) -> list[tuple[str, list[str]]]:
    return [
        (f"items[{i}].value", item.value)
        for i, item in enumerate(config.items)
        if item.input_type == "variable" and isinstance(item.value, list)
    ]


@node_type("assigner", config=AssignerConfig, outputs=[], references=_references)
async def run(ctx: NodeContext) -> NodeResult:
    """Write conversation or loop variables; what changed is in ``process_data``."""
    config: AssignerConfig = ctx.config
    if config.v2:
        writes = [_plan_v2(item, f"items[{i}]") for i, item in enumerate(config.items)]
    else:
        writes = [_plan_v1(config)]
    updated: list[dict[str, Any]] = []
    inputs: dict[str, Any] = {}
    # Stage every write first, so an item that fails leaves the variables as they were.
    staged: dict[tuple[str, str], Any] = {}
    for field, selector, operation, source in writes:
        target = _target(ctx, selector, field)
        before = staged[target] if target in staged else ctx.pool.get(target)
        value = source(ctx) if operation not in _NO_VALUE else None
        staged[target] = after = apply(operation, before, value, field=field)
        inputs[".".join(target)] = value
        updated.append({"selector": list(target), "operation": operation,
                        "old_value": before, "new_value": after})
    for (scope, name), value in staged.items():
        ctx.pool.set(scope, name, value)
    return NodeResult(inputs=inputs, outputs={}, process_data={"updated_variables": updated})


_Source = Callable[[NodeContext], Any]


def _plan_v1(config: AssignerConfig) -> tuple[str, list[str], str, _Source]:
    selector = config.assigned_variable_selector or []
    field = "assigned_variable_selector"
    if config.write_mode == "clear":
        return field, selector, "clear", _constant(None)
    if not config.input_variable_selector:
        raise NodeError(f"write_mode {config.write_mode!r} needs a value to write",
                        field="input_variable_selector",
                        hint="set input_variable_selector, e.g. ['llm', 'text']")
    return field, selector, config.write_mode, _variable(config.input_variable_selector,
                                                         "input_variable_selector")


def _plan_v2(item: AssignerItem, field: str) -> tuple[str, list[str], str, _Source]:
    if item.operation not in OPERATIONS:
        raise NodeError(f"unknown operation {item.operation!r}", field=f"{field}.operation",
                        hint=f"use one of: {', '.join(OPERATIONS)}")
    if item.operation in _NO_VALUE:
        return field, item.variable_selector, item.operation, _constant(None)
    if item.input_type == "variable":
        selector = item.value
        if not isinstance(selector, list) or len(selector) < 2:
            raise NodeError(f"input_type 'variable' needs a selector as value, got {selector!r}",
                            field=f"{field}.value",
                            hint="give a selector like ['llm', 'text'], or input_type 'constant'")
        return field, item.variable_selector, item.operation, _variable(selector, f"{field}.value")
    return field, item.variable_selector, item.operation, _constant(item.value)


def _constant(value: Any) -> _Source:
    return lambda _ctx: value


def _variable(selector: list[str], field: str) -> _Source:
    return lambda ctx: ctx.get(selector, field=field)


def _target(ctx: NodeContext, selector: list[str], field: str) -> tuple[str, str]:
    where = f"{field}.variable_selector" if field.startswith("items") else field
    if len(selector) != 2:
        raise NodeError(f"cannot assign to {selector!r}: name one variable as [scope, name]",
                        field=where, hint="use ['conversation', name] or [loop_id, label]")
    if selector[0] in _READ_ONLY:
        raise NodeError(f"{selector[0]}.* variables are read-only", field=where,
                        hint="assign a conversation variable or a loop variable instead")
    outputs = ctx.pool.outputs(selector[0])
    if outputs is None or selector[1] not in outputs:
        hint = (f"declare it: wf.conversation_variables.append(ConversationVariable("
                f"name={selector[1]!r}, ...))" if selector[0] == "conversation"
                else "assign a conversation variable or a variable of an enclosing loop")
        raise NodeError(f"there is no variable {'.'.join(selector)} to assign", field=where,
                        hint=hint)
    return selector[0], selector[1]


def apply(operation: str, current: Any, value: Any, *, field: str = "operation") -> Any:
    """The variable's new value after ``operation`` with ``value``; a type clash raises."""
    where = f"{field} ({operation})"
    if operation in ("over-write", "set"):
        _check_same_kind(current, value, where)
        return value
    if operation == "clear":
        return empty_like(current)
    if operation in ("append", "extend", "remove-first", "remove-last"):
        if not isinstance(current, list):
            raise NodeError(f"{operation!r} needs an array variable, this one holds "
                            f"{_kind(current)}", field=where,
                            hint="use over-write for a non-array variable")
        if operation == "append":
            return [*current, value]
        if operation == "extend":
            if not isinstance(value, list):
                raise NodeError(f"'extend' needs an array value, got {_kind(value)}", field=where,
                                hint="use append to add a single item")
            return [*current, *value]
        return current[1:] if operation == "remove-first" else current[:-1]
    return _arithmetic(operation, current, value, where)


def _arithmetic(operation: str, current: Any, value: Any, where: str) -> Any:
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise NodeError(f"{operation!r} needs a number variable, this one holds "
                        f"{_kind(current)}", field=where,
                        hint="use +=, -=, *=, /= on number variables only")
    operand = to_number(value)
    if operand is None:
        raise NodeError(f"{operation!r} needs a number value, got {_kind(value)} {value!r}",
                        field=where, hint="give a number, or a variable holding one")
    if operation == "/=":
        if operand == 0:
            raise NodeError("division by zero", field=where, hint="divide by a non-zero number")
        result: float = current / operand
    elif operation == "+=":
        result = current + operand
    elif operation == "-=":
        result = current - operand
    else:
        result = current * operand
    # Keep integers integers when the arithmetic allows (Dify's number segments do too).
    if isinstance(current, int) and float(result).is_integer() and (
            operation != "/=" and float(operand).is_integer()):
        return int(result)
    return result


def empty_like(value: Any) -> Any:
    """The empty value of ``value``'s type: '', 0, False, [], {}; None stays None."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return type(value)(0)
    if isinstance(value, str):
        return ""
    if isinstance(value, list):
        return []
    if isinstance(value, dict):
        return {}
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _check_same_kind(current: Any, value: Any, where: str) -> None:
    # None on either side is allowed: an undeclared value or a reset to "unset".
    if current is None or value is None or _kind(current) == _kind(value):
        return
    raise NodeError(f"cannot write {_kind(value)} into a variable holding {_kind(current)}",
                    field=where, hint="write a value of the variable's type")
