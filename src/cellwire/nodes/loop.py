"""loop: repeat the inner sub-graph until a break condition holds, a loop-end node is reached,
or ``loop_count`` rounds have run.

As in Dify, the rounds share the surrounding pool: loop variables live at ``[loop_id, label]``
and inner nodes update them in place, while the inner nodes' own outputs are removed before
each round so that no round reads a stale value of the round before.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeFailure, NodeResult
from cellwire.engine.events import ContainerCompleted, ContainerNext, ContainerStarted
from cellwire.model import NodeConfig, node_type

from .conditions import Condition, LogicalOperator, evaluate

LOOP_BREAK = "loop_break"
LOOP_COMPLETED = "loop_completed"


class LoopVariable(NodeConfig):
    label: str
    #: Dify's type name: string, number, object, boolean, array[string], array[number], ...
    var_type: str = "string"
    #: ``variable``: ``value`` is a selector to read; ``constant``: ``value`` is the value.
    value_type: Literal["variable", "constant"] = "constant"
    value: Any = None


class LoopConfig(NodeConfig):
    loop_count: int = Field(10, ge=0)
    break_conditions: list[Condition] = Field(default_factory=list)
    logical_operator: LogicalOperator = "and"
    loop_variables: list[LoopVariable] = Field(default_factory=list)
    start_node_id: str = ""


def _outputs(config: LoopConfig) -> list[str]:
    return [*(v.label for v in config.loop_variables), "index", "loop_round"]


@node_type("loop", config=LoopConfig, container=True, outputs=_outputs)
async def run(ctx: NodeContext) -> NodeResult:
    """Run the inner nodes round after round; outputs the loop variables' final values."""
    config: LoopConfig = ctx.config
    loop_id = ctx.node.id
    pool = ctx.pool
    clock = ctx.runtime.clock
    variables = {v.label: _initial_value(ctx, v, i) for i, v in enumerate(config.loop_variables)}
    pool.set_outputs(loop_id, {**variables, "index": 0})
    inner = ctx.descendants()
    inputs: dict[str, Any] = {"loop_count": config.loop_count, **variables}
    durations: dict[str, float] = {}
    values: dict[str, dict[str, Any]] = {}
    ctx.emit(ContainerStarted, kind="loop", total=config.loop_count)
    # Dify checks the break conditions once before the first round too; a value that is not
    # there yet (an inner node's output) simply does not hold then.
    broke = _should_break(ctx, config, before_first=True)
    rounds = 0
    try:
        while not broke and rounds < config.loop_count:
            index = rounds
            for node_id in inner:
                pool.remove(node_id)
            pool.set(loop_id, "index", index)
            ctx.emit(ContainerNext, kind="loop", index=index)
            t0 = clock.monotonic()
            frame = await ctx.run_children(pool, index)
            rounds += 1
            durations[str(index)] = clock.monotonic() - t0
            values[str(index)] = _current(ctx, config)
            broke = frame.break_requested or _should_break(ctx, config)
    except NodeFailure as exc:
        ctx.emit(ContainerCompleted, kind="loop", rounds=rounds + 1, reason="error")
        raise NodeError(f"round {rounds} failed: {exc}", error_type=exc.error_type,
                        hint="fix the failing node inside the loop") from exc
    except BaseException as exc:
        reason = "stopped" if isinstance(exc, asyncio.CancelledError) else "error"
        ctx.emit(ContainerCompleted, kind="loop", rounds=rounds, reason=reason)
        raise
    reason = LOOP_BREAK if broke else LOOP_COMPLETED
    ctx.emit(ContainerCompleted, kind="loop", rounds=rounds, reason=reason)
    outputs = {**_current(ctx, config), "index": rounds - 1 if rounds else None,
               "loop_round": rounds}
    return NodeResult(
        inputs=inputs,
        outputs=outputs,
        metadata={"completed_reason": reason, "loop_duration_map": durations,
                  "loop_variable_map": values},
    )


def _current(ctx: NodeContext, config: LoopConfig) -> dict[str, Any]:
    """The loop variables as they stand now."""
    return {v.label: ctx.pool.get([ctx.node.id, v.label], None) for v in config.loop_variables}


def _should_break(ctx: NodeContext, config: LoopConfig, *, before_first: bool = False) -> bool:
    if not config.break_conditions:
        return False
    try:
        return evaluate(config.break_conditions, config.logical_operator,
                        lambda selector: ctx.pool.get(selector, None), field="break_conditions")
    except NodeError:
        if before_first:
            return False
        raise


def _initial_value(ctx: NodeContext, var: LoopVariable, position: int) -> Any:
    field = f"loop_variables[{position}].value"
    if var.value_type == "variable":
        selector = var.value
        if not (isinstance(selector, list) and len(selector) >= 2):
            raise NodeError(f"loop variable {var.label!r} takes its value from a variable, but "
                            f"value is {var.value!r}", field=field,
                            hint="set value to a selector, e.g. ['start', 'n'], or make "
                                 "value_type 'constant'")
        return ctx.get(selector, field=field)
    return constant(var.var_type, var.value, field=field)


def constant(var_type: str, value: Any, *, field: str = "value") -> Any:
    """A constant loop variable as its declared type; JSON text is parsed, as Dify does."""
    kind = var_type.lower()
    if value is None or (value == "" and kind != "string"):
        return [] if kind.startswith("array") else None
    try:
        if kind == "number" and isinstance(value, str):
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
        if kind == "boolean" and isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        if (kind == "object" or kind.startswith("array")) and isinstance(value, str):
            return json.loads(value)
    except ValueError:
        raise NodeError(f"{value!r} is not a valid {var_type}", field=field,
                        hint=f"give a {var_type} value" + (" as JSON" if kind != "number" else ""),
                        ) from None
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise NodeError(f"{value!r} is not a number", field=field, hint="give a number")
    return value


@node_type("loop-start", start=True, outputs=())
async def run_start(ctx: NodeContext) -> NodeResult:
    """Where a loop's inner graph begins; it passes through."""
    return NodeResult()


@node_type("loop-end", outputs=())
async def run_end(ctx: NodeContext) -> NodeResult:
    """Reaching this node ends the loop after the current round."""
    ctx.frame.break_requested = True
    return NodeResult()
