"""template-transform: render a Jinja2 template (sandboxed) over named variables and the pool."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cellwire.engine import NodeContext, NodeResult
from cellwire.engine.bounded_jinja import TEMPLATE_MAX_LENGTH
from cellwire.model import NodeConfig, node_type

#: Longest output a template may produce (Dify's TEMPLATE_TRANSFORM_MAX_LENGTH in graphon);
#: ``CELLWIRE_TEMPLATE_MAX_LENGTH`` changes it.
TEMPLATE_TRANSFORM_MAX_LENGTH = TEMPLATE_MAX_LENGTH


class TemplateVariable(NodeConfig):
    variable: str
    value_selector: list[str] = Field(default_factory=list)


class TemplateTransformConfig(NodeConfig):
    template: str = ""
    variables: list[TemplateVariable] = Field(default_factory=list)


def named_inputs(ctx: NodeContext, variables: list[TemplateVariable]) -> dict[str, Any]:
    """``{variable: value}`` read from the pool; a missing value is None, as in Dify."""
    return {
        v.variable: ctx.pool.get(v.value_selector, None) if v.value_selector else None
        for v in variables
    }


def _jinja_fields(config: TemplateTransformConfig) -> list[tuple[str, str]]:
    return [("template", config.template)]


@node_type("template-transform", config=TemplateTransformConfig, outputs=("output",),
           jinja=_jinja_fields, pure=True)
async def run(ctx: NodeContext) -> NodeResult:
    """Render ``template`` with the named ``variables``; the text is the output ``output``."""
    names = named_inputs(ctx, ctx.config.variables)
    output = await ctx.render_jinja(ctx.config.template, names, field="template",
                                    limits=ctx.template_limits("template"))
    return NodeResult(inputs=names, outputs={"output": output})
