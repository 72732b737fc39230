"""The llm node: prompt, memory and vision in, one model call, Dify's outputs out."""

from __future__ import annotations

import json
import re
from typing import Any

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import node_type
from cellwire.services.llm import ChatResponse

from .call import invoke, route_for
from .config import LLMConfig
from .memory import read_history, window_limit
from .prompt import build_request, context_text, jinja_variables, render_messages
from .vision import attach_images

_THINK = re.compile(r"<think>(.*?)</think>\s*", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def _outputs(config: LLMConfig) -> list[str]:
    names = ["text", "reasoning_content", "usage", "finish_reason"]
    return [*names, "structured_output"] if config.structured else names


def _jinja_fields(config: LLMConfig) -> list[tuple[str, str]]:
    """The prompt messages in jinja2 mode; every other prompt text is plain."""
    template = config.prompt_template
    items = template if isinstance(template, list) else [] if template is None else [template]
    return [(f"prompt_template[{i}].jinja2_text" if isinstance(template, list)
             else "prompt_template.jinja2_text", item.jinja2_text or item.text or "")
            for i, item in enumerate(items) if item.edition_type == "jinja2"]


@node_type("llm", config=LLMConfig, outputs=_outputs, jinja=_jinja_fields)
async def run(ctx: NodeContext) -> NodeResult:
    """Ask a chat model; outputs ``text``, ``reasoning_content``, ``usage``, ``finish_reason``."""
    config: LLMConfig = ctx.config
    notes: list[str] = []
    context = context_text(ctx, config)
    variables = jinja_variables(ctx, config)
    route = route_for(ctx, config.model)
    request = build_request(config, route.model,
                            await render_messages(ctx, config, context, variables))
    if config.memory is not None:
        # The prompt without history sets the history's token budget.
        history = await read_history(ctx, config.memory, notes, route=route, request=request,
                                     limit=window_limit(config.memory), reply_node=ctx.node.id)
        if history:
            request.messages = await render_messages(ctx, config, context, variables, history)
    if config.vision is not None and config.vision.enabled:
        await attach_images(ctx, config.vision, request.messages, notes)
    messages = request.messages
    call = await invoke(ctx, route, request, cache=config.cache,
                        reasoning_format=config.reasoning_format)
    response = call.response

    text, reasoning = _reasoning_split(response, config.reasoning_format)
    outputs: dict[str, Any] = {"text": text, "reasoning_content": reasoning}
    if config.structured:
        outputs["structured_output"] = parse_json(response.text)
    outputs["usage"] = call.usage_dict
    outputs["finish_reason"] = response.finish_reason

    inputs: dict[str, Any] = dict(variables)
    if config.context is not None and config.context.enabled:
        inputs["#context#"] = context
    process_data: dict[str, Any] = {
        "model_mode": config.model.mode,
        "model_provider": route.provider.name,
        "model_name": route.model,
        "prompts": [m.as_dict() for m in messages],
        "usage": call.usage_dict,
        "finish_reason": response.finish_reason,
    }
    if response.tool_calls:
        process_data["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls
        ]
    if call.note:
        notes.append(call.note)
    if notes:
        process_data["notes"] = notes
    return NodeResult(outputs=outputs, inputs=inputs, process_data=process_data,
                      usage=call.node_usage(), metadata=call.metadata())



def _reasoning_split(response: ChatResponse, reasoning_format: str) -> tuple[str, str]:
    """``(text, reasoning_content)`` in Dify's two reasoning formats."""
    if reasoning_format == "tagged":
        if response.reasoning:
            return f"<think>\n{response.reasoning}\n</think>\n{response.text}", ""
        return response.text, ""
    inline = [m.strip() for m in _THINK.findall(response.text)]
    text = _THINK.sub("", response.text)
    reasoning = "\n".join(p for p in [response.reasoning, *inline] if p)
    return text, reasoning


def parse_json(text: str) -> Any:
    """The JSON value in a model's reply (fenced or bare; ``<think>`` blocks removed)."""
    match = _FENCE.match(text)
    body = match.group(1) if match else _THINK.sub("", text).strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        # Not a config error: the model may well answer in JSON on the next attempt.
        raise NodeError(f"the model's reply is not valid JSON ({exc}): {text[:200]!r}",
                        field="structured_output",
                        hint="make the prompt ask for JSON only, or use a model that "
                             "supports structured output") from None
