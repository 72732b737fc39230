"""The agent node: Dify's agent with its default strategies (function calling, ReAct), its
tools bound to registered ones, every model and tool call a step of its own in the trace."""

from __future__ import annotations

import json
from typing import Any

from cellwire.engine import NodeContext, NodeError, NodeResult, Usage
from cellwire.model import node_type
from cellwire.services.llm import ChatMessage

from . import function_calling, react
from .config import AGENT_V2_FIX, AGENT_V2_NEED, AgentConfig, iterations, parameter
from .model import AgentModel
from .toolbox import Toolbox


@node_type("agent", config=AgentConfig, outputs=["text", "usage", "files", "json"])
async def run(ctx: NodeContext) -> NodeResult:
    """Answer ``query`` with the model and tools; outputs ``text``, ``usage``, ``files``,
    ``json`` (the tool calls)."""
    config: AgentConfig = ctx.config
    strategy = config.strategy
    if config.package_ref is not None:
        raise NodeError("it needs " + AGENT_V2_NEED.format(ref=config.package_ref),
                        field="agent_binding", hint=AGENT_V2_FIX,
                        error_type="UnsupportedNode", fatal=True)
    if strategy is None:
        shown = "/".join(p for p in (config.agent_strategy_provider_name,
                                     config.agent_strategy_name or "") if p)
        raise NodeError(f"the agent strategy '{shown}' is not one cellwire runs",
                        field="agent_strategy_name",
                        hint="use Dify's default strategies: 'function_calling' or 'ReAct'",
                        error_type="UnsupportedAgentStrategy", fatal=True)
    toolbox = Toolbox.bind(ctx, config)
    model = AgentModel.of(ctx, config)
    rounds = iterations(ctx, config)
    instruction = _text(parameter(ctx, config, "instruction"))
    query = _text(parameter(ctx, config, "query"))
    if not query.strip():
        raise NodeError("the query is empty", field="agent_parameters.query",
                        hint="set the query, e.g. {{#sys.query#}}")
    messages: list[ChatMessage] = []
    notes: list[str] = []
    if config.raw("mcp_server"):
        notes.append("mcp_server is not used: give MCP servers to the run instead "
                     "(`--mcp servers.json`, or MCPServer tools in Python)")
    if strategy == "react":
        messages.append(ChatMessage("user", query))
        answer, said = await react.run(model, toolbox, messages, rounds, instruction)
        await ctx.stream(answer, selector=(ctx.node.id, "text"))
    else:
        if instruction.strip():
            messages.append(ChatMessage("system", instruction))
        messages.append(ChatMessage("user", query))
        answer, said = await function_calling.run(model, toolbox, messages, rounds)
    await ctx.stream("", selector=(ctx.node.id, "text"), is_final=True)
    notes += said
    usage = model.usage_output()
    outputs: dict[str, Any] = {"text": answer, "usage": usage, "files": [],
                               "json": [{"tool_calls": toolbox.calls}] if toolbox.calls else []}
    process_data: dict[str, Any] = {
        "strategy": strategy, "model_provider": model.route.provider.name,
        "model_name": model.route.model, "tools": sorted(b.tool.key for b in
                                                         toolbox.tools.values()),
        "steps": toolbox.steps, "maximum_iterations": rounds, "usage": usage}
    if notes:
        process_data["notes"] = notes
    # The steps already counted their tokens toward the run: the node adds none of its own.
    metadata = {"total_tokens": model.usage.total_tokens, "total_price": usage.get(
        "total_price"), "currency": usage.get("currency", "USD"), "agent_steps": toolbox.steps,
        "model": model.route.id}
    return NodeResult(outputs=outputs, inputs={"query": query, "instruction": instruction},
                      process_data=process_data, metadata=metadata,
                      usage=Usage(model=model.route.id))


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
