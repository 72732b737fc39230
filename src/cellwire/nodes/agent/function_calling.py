"""Dify's ``function_calling`` strategy: the model calls tools through its API's tool
calling; every round's calls run at once and their results go back as tool messages."""

from __future__ import annotations

from cellwire.services.llm import ChatMessage, ToolCall

from .model import AgentModel
from .toolbox import Toolbox


async def run(model: AgentModel, toolbox: Toolbox, messages: list[ChatMessage],
              rounds: int) -> tuple[str, list[str]]:
    """The final answer and notes. The last round offers no tools (as Dify does), so the
    model answers with what it has; a model that still asks for a tool ends the loop."""
    texts: list[str] = []
    notes: list[str] = []
    for round_ in range(1, rounds + 1):
        last = round_ == rounds
        offered = [] if last else toolbox.functions()
        response = await model.ask(toolbox, messages, tools=offered)
        if response.text:
            texts.append(response.text)
        if not response.tool_calls:
            if last and toolbox.tools:
                notes.append(f"reached maximum_iterations ({rounds}): the last round offered "
                             "no tools, so the model answered with what it had")
            return "".join(texts), notes
        if last:
            note = (f"stopped at maximum_iterations ({rounds}) with the model still asking "
                    f"for tools ({', '.join(c.name for c in response.tool_calls)}); raise "
                    "maximum_iterations to let it finish")
            notes.append(note)
            if texts:
                return "".join(texts), notes
            await model.ctx.stream(f"[{note}]", selector=(model.ctx.node.id, "text"))
            return f"[{note}]", notes
        messages.append(ChatMessage("assistant", response.text, tool_calls=[
            ToolCall(c.id, c.name, c.arguments) for c in response.tool_calls]))
        results = await toolbox.call_all([(c.id, c.name, c.arguments)
                                          for c in response.tool_calls])
        for call, result in zip(response.tool_calls, results, strict=True):
            messages.append(ChatMessage("tool", result, tool_call_id=call.id, name=call.name))
    return "".join(texts), notes
