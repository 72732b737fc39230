"""answer: a chat reply, its ``{{#node.var#}}`` references filled in, streamed to the run's answer."""

from __future__ import annotations

from cellwire.engine import NodeContext, NodeResult
from cellwire.model import NodeConfig, node_type


class AnswerConfig(NodeConfig):
    answer: str = ""


@node_type("answer", config=AnswerConfig, outputs=("answer", "files"))
async def run(ctx: NodeContext) -> NodeResult:
    """Fill in the ``{{#node.var#}}`` references of ``answer`` and stream it.

    Everything else is literal text, as in Dify; values read as Markdown (objects as
    indented JSON, arrays as ``- item`` lists) and a variable of a skipped branch as
    nothing, as Dify's answer shows them.
    """
    text = ctx.render(ctx.config.answer, answer=True)
    if text:
        await ctx.stream(text, selector=(ctx.node.id, "answer"), is_final=True)
    return NodeResult(outputs={"answer": text, "files": []})
