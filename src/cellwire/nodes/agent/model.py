"""The agent's model: each call through the llm node's call path (route, cache, stream,
usage, price), recorded as a step of the agent with its tokens and cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cellwire.engine import NodeContext, NodeError, Usage
from cellwire.services.llm import ChatMessage, ChatRequest, ChatResponse, Route

from ..llm.call import finite, invoke, route_for
from ..llm.config import ModelConfig
from .config import AgentConfig, parameter
from .toolbox import Toolbox


@dataclass
class AgentModel:
    ctx: NodeContext
    route: Route
    params: dict[str, Any]
    usage: Usage = field(default_factory=Usage)
    #: Dify's usage output, summed over the calls.
    prices: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, ctx: NodeContext, config: AgentConfig) -> AgentModel:
        value = parameter(ctx, config, "model")
        if not isinstance(value, dict) or not (value.get("model") or value.get("name")):
            if ctx.runtime.model_override is None:
                raise NodeError("no model is chosen", field="agent_parameters.model",
                                hint="pick the agent's model (provider and name), or run "
                                     "with model='provider/name'", fatal=True)
            value = {}
        model = ModelConfig(provider=str(value.get("provider") or ""),
                            name=str(value.get("model") or value.get("name") or ""),
                            mode=str(value.get("mode") or "chat"))
        params = dict(value.get("completion_params") or {})
        return cls(ctx, route_for(ctx, model), params)

    async def ask(self, toolbox: Toolbox, messages: list[ChatMessage], *,
                  tools: list[dict[str, Any]] | None = None, stop: list[str] | None = None,
                  stream: bool = True) -> ChatResponse:
        """One model call, recorded as a step of the agent (a trace row with its tokens and
        cost); text streams to the agent's ``text`` when ``stream``."""
        params = dict(self.params)
        request = ChatRequest(
            model=self.route.model, messages=list(messages),
            temperature=params.pop("temperature", None), top_p=params.pop("top_p", None),
            max_tokens=params.pop("max_tokens", None),
            stop=[*params.pop("stop", []), *(stop or [])], tools=list(tools or []),
            params=params)
        step = toolbox.next_step()
        started = self.ctx.runtime.clock.now()
        call = await invoke(self.ctx, self.route, request, stream=stream, final=False)
        response = call.response
        usage = call.node_usage()
        self.usage = self.usage + usage
        for key, value in call.usage_dict.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in (
                    "latency", "time_to_first_token"):
                self.prices[key] = (self.prices.get(key) or 0) + value
            elif key == "currency":
                self.prices[key] = value
        self.prices["latency"] = self.prices.get("latency", 0) + call.usage_dict["latency"]
        outputs: dict[str, Any] = {"text": response.text, "finish_reason": response.finish_reason}
        if response.tool_calls:
            outputs["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments}
                                     for c in response.tool_calls]
        self.ctx.record_step(
            "llm", f"{self.route.id}", step=step, started_at=started,
            inputs={"prompts": [m.as_dict() for m in messages]}, outputs=outputs,
            process_data={"model_provider": self.route.provider.name,
                          "model_name": self.route.model, "usage": call.usage_dict},
            metadata=call.metadata(), usage=usage)
        return response

    def usage_output(self) -> dict[str, Any]:
        out = {k: (finite(v) if isinstance(v, float) else v) for k, v in self.prices.items()}
        out.setdefault("total_tokens", self.usage.total_tokens)
        return out
