"""The tool node: Dify's ``tool`` node, bound to a registered tool by provider and name.

Parameters come in Dify's three forms (``variable``: a selector, ``mixed``: a template,
``constant``: the value), configurations as values or in the same form. Outputs are
Dify's: ``text``, ``files``, ``json``, and a mapping result's keys as variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.engine.services import ToolService
from cellwire.model import Node, NodeConfig, Problem, Workflow, node_type
from cellwire.services.tools import ToolContext, ToolError, default_registry


class ToolParameter(NodeConfig):
    # Newer Dify adds kinds (e.g. 'mention'); anything but variable and mixed is a constant.
    type: str = "constant"
    value: Any = None


class ToolConfig(NodeConfig):
    provider_id: str = ""
    provider_type: str = ""
    provider_name: str = ""
    tool_name: str = ""
    #: Older exports give a parameter as a bare template string instead of {type, value}.
    tool_parameters: dict[str, ToolParameter | Any] = Field(default_factory=dict)
    tool_configurations: dict[str, Any] = Field(default_factory=dict)

    @property
    def provider(self) -> str:
        return self.provider_id or self.provider_name


def tools_of(ctx: NodeContext) -> ToolService:
    """The run's tools: ``runtime.tools``, else the process-wide registry."""
    tools = ctx.runtime.tools
    return tools if tools is not None else default_registry()


def tool_context(ctx: NodeContext) -> ToolContext:
    """What a tool called by this node may use: the run's HTTP, network policy, knowledge
    bases and the secrets granted to the run."""
    return ToolContext(http=ctx.runtime.http, network=ctx.runtime.network,
                       knowledge=ctx.runtime.knowledge, secrets=ctx.secrets,
                       caller=f"node '{ctx.node.id}'")


def unbound_fix(tool_name: str, provider: str) -> str:
    """How to give a workflow the tool it names."""
    short = provider.rstrip("/").split("/")[-1]
    shown = f", provider='{short}'" if short else ""
    return (f"register a tool named '{tool_name}': @cellwire.tool(name='{tool_name}'{shown}) "
            f"in Python, `cellwire run FILE --tools tools.py` (or --mcp servers.json), or map "
            f"'{short + '/' if short else ''}{tool_name}' to a registered tool with "
            "--tool-map renames.yaml")


def unbound_error(node: Node, tool_name: str, provider: str, why: str, *,
                  field: str = "tool_name") -> NodeError:
    shown = f"{provider}/{tool_name}" if provider else tool_name
    return NodeError(f"node '{node.id}' ({node.title or node.id}): the tool '{shown}' is not "
                     f"registered: {why}", field=field, hint=unbound_fix(tool_name, provider),
                     error_type="ToolNotFound", fatal=True)


def tool_error(error: ToolError, field: str = "tool_name") -> NodeError:
    return NodeError(str(error), field=field, hint=error.hint, error_type=error.kind)


@node_type("tool", config=ToolConfig)
async def run(ctx: NodeContext) -> NodeResult:
    """Call the registered tool; outputs ``text``, ``files``, ``json`` (and a mapping
    result's keys)."""
    config: ToolConfig = ctx.config
    if not config.tool_name:
        raise NodeError("no tool is named", field="tool_name",
                        hint="set tool_name to a registered tool's name", fatal=True)
    tools = tools_of(ctx)
    tool = tools.find(config.tool_name, config.provider)
    if tool is None:
        raise unbound_error(ctx.node, config.tool_name, config.provider,
                            tools.why_unbound(config.tool_name, config.provider))
    arguments: dict[str, Any] = {}
    known = declared(tool.parameters)
    ignored = []
    for name, value in config.tool_configurations.items():
        # Dify's provider settings a registered tool does not take are left out, not errors.
        if known is not None and name not in known:
            ignored.append(name)
            continue
        arguments[name] = _value(ctx, value, f"tool_configurations.{name}")
    for name, param in config.tool_parameters.items():
        arguments[name] = _value(ctx, param, f"tool_parameters.{name}")
    try:
        output = await tools.call(tool, arguments, tool_context(ctx))
    except ToolError as exc:
        raise tool_error(exc) from None
    outputs = {**output.variables, "text": output.text, "files": output.files,
               "json": output.json}
    process_data: dict[str, Any] = {"tool": tool.key, "tool_kind": tool.kind}
    if ignored:
        process_data["ignored_configurations"] = ignored
    if output.notes:
        process_data["notes"] = list(output.notes)
    return NodeResult(inputs=arguments, outputs=outputs, process_data=process_data,
                      metadata={"tool_info": {"provider": tool.provider, "name": tool.name}})


def declared(schema: Mapping[str, Any]) -> set[str] | None:
    """The arguments a tool's schema names, or None when it takes any."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or schema.get("additionalProperties", False) \
            not in (False, None):
        return None
    return set(properties)


def _value(ctx: NodeContext, param: Any, field: str) -> Any:
    """A parameter's value in any of Dify's forms."""
    if isinstance(param, ToolParameter):
        kind, value = param.type, param.value
    elif isinstance(param, Mapping) and "value" in param and set(param) <= {"type", "value"}:
        kind, value = str(param.get("type") or "constant"), param["value"]
    else:
        kind, value = ("mixed" if isinstance(param, str) else "constant"), param
    if kind == "variable":
        if not isinstance(value, list):
            raise NodeError(f"a variable parameter needs a selector, got {value!r}",
                            field=field, hint="give it as ['node_id', 'output']")
        return ctx.get(value, field=field)
    if kind == "mixed" and isinstance(value, str):
        return ctx.render(value)
    return value


class ToolReference(NamedTuple):
    """A tool a node names (a tool node's one, or one of an agent's): Dify's ``tool_name``
    and provider, and the config field that names it."""

    tool_name: str
    provider: str
    field: str


def tool_references(node: Node) -> list[ToolReference]:
    """The tools ``node`` names: a tool node's tool, an agent's enabled tools; none for
    other nodes, or for an agent config that does not parse (validate() reports that)."""
    from .agent.config import AgentConfig

    config = node.config if isinstance(node.config, Mapping) else {}
    if node.type == "tool":
        name = str(config.get("tool_name") or "")
        provider = str(config.get("provider_id") or config.get("provider_name") or "")
        return [ToolReference(name, provider, "tool_name")] if name else []
    if node.type == "agent":
        try:
            entries = AgentConfig.model_validate(config).tools()
        except (ValueError, NodeError):
            return []
        return [ToolReference(e.tool_name, e.provider_name, f"agent_parameters.tools[{i}]")
                for i, e in enumerate(entries) if e.tool_name]
    return []


def tool_problems(workflow: Workflow, tools: ToolService | None = None) -> list[Problem]:
    """A warning per tool reference (a tool node, a tool of an agent) that binds to no
    registered tool, naming the node, the tool and how to register one. The workflow still
    loads, shows, edits and exports; only running that node fails."""
    from .agent.config import AgentConfig

    registry = tools if tools is not None else default_registry()
    problems: list[Problem] = []
    for node in workflow.nodes.values():
        if node.type == "agent":
            try:
                agent = AgentConfig.model_validate(
                    node.config if isinstance(node.config, Mapping) else {})
            except ValueError:
                continue  # validate() reports a config that does not parse
            if agent.strategy is None:
                problems.append(Problem(
                    node.id, "agent_strategy_name", f"agent node '{node.title or node.id}' "
                    f"uses the strategy '{agent.agent_strategy_name}', which cellwire does not "
                    "run", "use Dify's default strategies: 'function_calling' or 'ReAct'",
                    "warning"))
        for ref in tool_references(node):
            if registry.find(ref.tool_name, ref.provider) is not None:
                continue
            shown = f"{ref.provider}/{ref.tool_name}" if ref.provider else ref.tool_name
            problems.append(Problem(
                node.id, ref.field, f"{node.type} node '{node.title or node.id}' uses the tool "
                f"'{shown}', which is not registered: "
                f"{registry.why_unbound(ref.tool_name, ref.provider)}",
                unbound_fix(ref.tool_name, ref.provider), "warning"))
    return problems
