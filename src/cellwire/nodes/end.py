"""end: the run's outputs, each read from the variable pool."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cellwire.engine import NodeContext, NodeResult
from cellwire.model import NodeConfig, node_type


class EndOutput(NodeConfig):
    variable: str
    value_selector: list[str] = Field(default_factory=list)
    value_type: str | None = None


class EndConfig(NodeConfig):
    outputs: list[EndOutput] = Field(default_factory=list)


@node_type("end", config=EndConfig, outputs=lambda c: [o.variable for o in c.outputs])
async def run(ctx: NodeContext) -> NodeResult:
    """Collect the workflow's outputs; a selector that resolves to nothing gives None."""
    outputs: dict[str, Any] = {}
    for out in ctx.config.outputs:
        outputs[out.variable] = ctx.pool.get(out.value_selector, None) if out.value_selector else None
    return NodeResult(inputs=dict(outputs), outputs=outputs)
