"""answer: a chat reply rendered from a template and streamed to the run's answer."""

from __future__ import annotations

from cellwire.engine import NodeContext, NodeResult
from cellwire.model import NodeConfig, node_type

from .template_transform import render_template


class AnswerConfig(NodeConfig):
    answer: str = ""


@node_type("answer", config=AnswerConfig, outputs=("answer", "files"))
async def run(ctx: NodeContext) -> NodeResult:
    """Render ``answer`` (``{{#node.var#}}`` or ``{{ node.var }}``) and stream it."""
    text = render_template(ctx.config.answer, ctx, {}, field="answer")
    if text:
        await ctx.stream(text, selector=(ctx.node.id, "answer"), is_final=True)
    return NodeResult(outputs={"answer": text, "files": []})
