"""variable-aggregator: the first value that exists among several selectors.

Branches of an if-else often produce the same thing under different nodes; the aggregator
reads them in order and passes on whichever ran. With groups, it does so once per group.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import NodeConfig, node_type


class Group(NodeConfig):
    group_name: str
    output_type: str = "any"
    variables: list[list[str]] = Field(default_factory=list)
    groupId: str | None = None


class AdvancedSettings(NodeConfig):
    group_enabled: bool = False
    groups: list[Group] = Field(default_factory=list)


class AggregatorConfig(NodeConfig):
    output_type: str = "any"
    variables: list[list[str]] = Field(default_factory=list)
    advanced_settings: AdvancedSettings | None = None

    @property
    def grouped(self) -> bool:
        return self.advanced_settings is not None and self.advanced_settings.group_enabled


def _outputs(config: AggregatorConfig) -> Collection[str]:
    if config.grouped:
        assert config.advanced_settings is not None
        return [g.group_name for g in config.advanced_settings.groups]
    return ["output"]


def _references(config: AggregatorConfig) -> Iterator[tuple[str, list[str]]]:
    for i, selector in enumerate(config.variables):
        yield f"variables[{i}]", selector
    for g, group in enumerate(config.advanced_settings.groups if config.advanced_settings else []):
        for i, selector in enumerate(group.variables):
            yield f"advanced_settings.groups[{g}].variables[{i}]", selector


@node_type("variable-aggregator", config=AggregatorConfig, outputs=_outputs, references=_references,
           aliases=["variable-assigner"])
async def run(ctx: NodeContext) -> NodeResult:
    """Pass on the first variable (in order) that has a value; per group when grouped."""
    config: AggregatorConfig = ctx.config
    inputs: dict[str, Any] = {}
    if not config.grouped:
        value = _first(ctx, config.variables, "variables", inputs)
        return NodeResult(inputs=inputs, outputs={"output": value})
    assert config.advanced_settings is not None
    outputs: dict[str, Any] = {}
    for index, group in enumerate(config.advanced_settings.groups):
        if group.group_name in outputs:
            raise NodeError(f"group_name {group.group_name!r} is used twice",
                            field=f"advanced_settings.groups[{index}].group_name",
                            hint="give each group its own name")
        value = _first(ctx, group.variables, f"advanced_settings.groups[{index}].variables",
                       inputs)
        outputs[group.group_name] = {"output": value}
    return NodeResult(inputs=inputs, outputs=outputs)


def _first(ctx: NodeContext, selectors: list[list[str]], field: str,
           inputs: dict[str, Any]) -> Any:
    for index, selector in enumerate(selectors):
        if len(selector) < 2:
            raise NodeError(f"selector {selector!r} needs a node id and a variable name",
                            field=f"{field}[{index}]", hint="use e.g. ['llm', 'text']")
        value = ctx.pool.get(selector, None)
        if value is not None:
            inputs[".".join(selector)] = value
            return value
    return None
