"""list-operator: filter, pick, sort and cut an array, in Dify's order of steps.

The steps run as in Dify: filter (every condition must hold), extract (one item by 1-based
serial), order, then limit. Conditions and ordering look at an item itself, or at its
attribute ``key`` for arrays of objects or files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import NodeConfig, node_type

from .conditions import SubCondition, attribute, item_matches, normalise_operator, to_number


class FilterBy(NodeConfig):
    enabled: bool = False
    conditions: list[SubCondition] = Field(default_factory=list)


class OrderBy(NodeConfig):
    enabled: bool = False
    key: str = ""
    value: Literal["asc", "desc"] = "asc"


class Limit(NodeConfig):
    enabled: bool = False
    size: int = -1


class ExtractBy(NodeConfig):
    enabled: bool = False
    #: 1-based position; may be a template such as ``{{#start.n#}}``.
    serial: str | int | None = "1"


class ListOperatorConfig(NodeConfig):
    variable: list[str] = Field(default_factory=list)
    filter_by: FilterBy = Field(default_factory=FilterBy)
    order_by: OrderBy = Field(default_factory=OrderBy)
    limit: Limit = Field(default_factory=Limit)
    extract_by: ExtractBy = Field(default_factory=ExtractBy)


@node_type("list-operator", config=ListOperatorConfig,
           references=lambda c: [("variable", c.variable)] if c.variable else [],
           outputs=["result", "first_record", "last_record"])
async def run(ctx: NodeContext) -> NodeResult:
    """Filter, extract, sort and limit an array; also gives its first and last item."""
    config: ListOperatorConfig = ctx.config
    items = ctx.get_list(config.variable, field="variable")
    inputs = {"variable": items}
    if config.filter_by.enabled:
        items = _filter(ctx, items, config.filter_by.conditions)
    if config.extract_by.enabled:
        items = _extract(ctx, items, config.extract_by.serial)
    if config.order_by.enabled:
        items = _order(items, config.order_by)
    if config.limit.enabled:
        if config.limit.size < 0:
            raise NodeError(f"limit.size is {config.limit.size}", field="limit.size",
                            hint="give a size of 0 or more, or disable the limit")
        items = items[: config.limit.size]
    return NodeResult(
        inputs=inputs,
        outputs={"result": items, "first_record": items[0] if items else None,
                 "last_record": items[-1] if items else None},
    )




def _filter(ctx: NodeContext, items: list[Any], conditions: Sequence[SubCondition]) -> list[Any]:
    def get(selector: Sequence[str]) -> Any:
        return ctx.pool.get(selector, None)

    for index, cond in enumerate(conditions):
        field = f"filter_by.conditions[{index}]"
        normalise_operator(cond.comparison_operator, f"{field}.comparison_operator")
        items = [item for item in items if item_matches(cond, item, get, field=field)]
    return items


def _extract(ctx: NodeContext, items: list[Any], serial: str | int | None) -> list[Any]:
    text = ctx.render(str(serial if serial is not None else ""))
    number = to_number(text)
    if number is None or not number.is_integer():
        raise NodeError(f"serial {text!r} is not a whole number", field="extract_by.serial",
                        hint="give a 1-based position, e.g. 1 for the first item")
    position = int(number)
    if position < 1 or position > len(items):
        raise NodeError(f"serial {position} is outside the array of {len(items)} items",
                        field="extract_by.serial",
                        hint=f"give a position from 1 to {len(items)}" if items
                        else "the array is empty at this point; check the filter")
    return [items[position - 1]]


def _order(items: list[Any], order: OrderBy) -> list[Any]:
    keyed = [(attribute(item, order.key), item) for item in items]
    present = [pair for pair in keyed if pair[0] is not None]
    missing = [item for value, item in keyed if value is None]
    try:
        present.sort(key=lambda pair: _sort_key(pair[0]), reverse=order.value == "desc")
    except TypeError:
        kinds = sorted({type(v).__name__ for v, _ in present})
        raise NodeError(f"cannot order values of mixed types ({', '.join(kinds)})",
                        field="order_by.key" if order.key else "variable",
                        hint="order an array whose items (or their key) share one type") from None
    # Items without the key go last either way, as SQL's NULLS LAST.
    return [item for _, item in present] + missing


def _sort_key(value: Any) -> Any:
    # Booleans and numbers sort together as numbers; strings as strings.
    if isinstance(value, bool):
        return int(value)
    return value
