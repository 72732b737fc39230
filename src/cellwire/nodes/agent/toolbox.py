"""The agent's tools: bound to registered tools, offered to the model without their fixed
arguments, and called with every call recorded as a step of the agent."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cellwire.engine import NodeContext
from cellwire.services.tools import Tool, ToolError

from ..tool import declared, tool_context, tools_of, unbound_error
from .config import AgentConfig, AgentTool


@dataclass
class Bound:
    """A tool of the agent: the registered tool, its fixed arguments and what the model sees."""

    tool: Tool
    fixed: dict[str, Any]
    schema: dict[str, Any]
    description: str

    def function(self) -> dict[str, Any]:
        return {"type": "function", "function": {
            "name": self.tool.name, "description": self.description, "parameters": self.schema}}


@dataclass
class Toolbox:
    """The bound tools by name, and the counter of the agent's steps."""

    ctx: NodeContext
    tools: dict[str, Bound]
    steps: int = 0
    #: Every tool call, in order: what the trace and the ``json`` output show.
    calls: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def bind(cls, ctx: NodeContext, config: AgentConfig) -> Toolbox:
        registry = tools_of(ctx)
        bound: dict[str, Bound] = {}
        for index, entry in enumerate(config.tools()):
            found = registry.find(entry.tool_name, entry.provider_name)
            if found is None:
                raise unbound_error(ctx.node, entry.tool_name, entry.provider_name,
                                    registry.why_unbound(entry.tool_name, entry.provider_name),
                                    field=f"agent_parameters.tools[{index}]")
            bound[found.name] = _bound(ctx, found, entry)
        return cls(ctx, bound)

    def next_step(self) -> int:
        self.steps += 1
        return self.steps

    def functions(self) -> list[dict[str, Any]]:
        return [b.function() for b in self.tools.values()]

    async def call_all(self, calls: list[tuple[str, str, str]]) -> list[str]:
        """Run the model's tool calls ``(id, name, arguments JSON)`` at once; each one's
        result text, or an error the model can read and correct."""
        steps = [self.next_step() for _ in calls]
        return list(await asyncio.gather(*(self.call(step, call_id, name, arguments)
                                           for step, (call_id, name, arguments)
                                           in zip(steps, calls, strict=True))))

    async def call(self, step: int, call_id: str, name: str, arguments: str | Mapping[str, Any]
                   ) -> str:
        """One tool call, recorded as a step; its result as text. Failures (an unknown tool,
        arguments that are not JSON, the tool's own error) come back as ``Error: ...`` text,
        as Dify hands them to the model."""
        ctx = self.ctx
        started = ctx.runtime.clock.now()
        bound = self.tools.get(name)
        error: ToolError | None = None
        parsed: dict[str, Any] = {}
        result = ""
        if bound is None:
            error = ToolError(f"there is no tool named {name!r}",
                              hint=f"use one of {', '.join(self.tools) or 'none'}",
                              kind="ToolNotFound")
        else:
            try:
                value = json.loads(arguments or "{}") if isinstance(arguments, str) \
                    else dict(arguments)
                if not isinstance(value, dict):
                    raise ValueError(f"a JSON object is needed, got {type(value).__name__}")  # noqa: TRY004
                parsed = value
            except ValueError as exc:
                error = ToolError(f"the arguments of {name!r} are not a valid JSON object "
                                  f"({exc}): {str(arguments)[:200]}",
                                  hint="send the arguments as one JSON object",
                                  kind="ToolArgumentsError")
        output = None
        if error is None and bound is not None:
            try:
                output = await tools_of(ctx).call(bound.tool, {**parsed, **bound.fixed},
                                                  tool_context(ctx))
                result = output.as_text()
            except ToolError as exc:
                error = exc
        text = result if error is None else f"Error: {error}" + (
            f" ({error.hint})" if error.hint else "")
        record: dict[str, Any] = {"id": call_id, "tool": name, "arguments": parsed,
                                  "result": text, "error": None if error is None else str(error)}
        self.calls.append(record)
        ctx.record_step(
            "tool", f"{name}", step=step, started_at=started,
            inputs={"tool_name": name, "arguments": parsed or arguments},
            outputs=({"text": output.text, "files": output.files, "json": output.json}
                     if output is not None else {"text": text}),
            process_data={"tool_call_id": call_id,
                          **({"tool": bound.tool.key} if bound is not None else {}),
                          **({"notes": list(output.notes)} if output and output.notes else {})},
            error=None if error is None else str(error),
            error_type="" if error is None else error.kind)
        return text


def _bound(ctx: NodeContext, tool: Tool, entry: AgentTool) -> Bound:
    fixed: dict[str, Any] = {}
    known = declared(tool.parameters)
    for name, setting in entry.settings.items():
        # Dify's provider settings a registered tool does not take are left out.
        if known is None or name in known:
            fixed[name] = _fixed(ctx, setting)
    for name, param in entry.parameters.items():
        if isinstance(param, Mapping) and not param.get("auto", 1):
            fixed[name] = _fixed(ctx, param.get("value"))
    schema = copy.deepcopy(tool.parameters)
    props = schema.get("properties") or {}
    for name in fixed:
        props.pop(name, None)
    if "required" in schema:
        schema["required"] = [r for r in schema["required"] if r not in fixed]
        if not schema["required"]:
            del schema["required"]
    description = str(entry.extra.get("description") or "") or tool.description
    return Bound(tool, fixed, schema, description)


def _fixed(ctx: NodeContext, setting: Any) -> Any:
    value = setting.get("value") if isinstance(setting, Mapping) and "value" in setting \
        else setting
    if isinstance(value, Mapping) and "type" in value and "value" in value:
        kind, inner = value["type"], value["value"]
        if kind == "variable" and isinstance(inner, list):
            return ctx.get(inner)
        return ctx.render(inner) if isinstance(inner, str) else inner
    return ctx.render(value) if isinstance(value, str) else value
