"""Dify node types that need something cellwire does not have here.

Tools from Dify's providers, agent strategies, triggers and
RAG-pipeline nodes keep their config so a workflow imports, validates and exports unchanged;
running one fails at that node with a message saying what it needs and how to supply it.
A ``tool`` node runs when a Python tool of its name is registered in ``runtime.tools``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import Node, NodeConfig, node_type, registry

#: What each type needs, and how to supply it: (need, fix). ``{...}`` fields come from config.
NEEDS: dict[str, tuple[str, str]] = {
    "tool": (
        "the {provider_type} tool '{provider}/{tool_name}' from Dify's tool providers",
        ("register a Python tool named '{tool_name}' in runtime.tools (cellwire tools), or "
        "replace the node with a code or http-request node"),
    ),
    "agent": (
        ("the Dify agent strategy '{agent_strategy_provider_name}/{agent_strategy_name}' "
        "(a marketplace plugin)"),
        "replace the node with an llm node (with tools) or a code node",
    ),
    "human-input": (
        "a person to fill in a form in Dify's web app",
        "replace the node with a start input carrying the decision, or with an if-else node",
    ),
    "trigger-webhook": (
        "a Dify webhook trigger to start the run",
        "replace the trigger with a start node that declares the webhook's fields as inputs",
    ),
    "trigger-schedule": (
        "Dify's scheduler to start the run",
        "replace the trigger with a start node and run the workflow from cron or a notebook",
    ),
    "trigger-plugin": (
        "the trigger plugin '{plugin_unique_identifier}' from Dify's marketplace",
        "replace the trigger with a start node that declares the event's fields as inputs",
    ),
    "datasource": (
        "a Dify RAG-pipeline data source",
        "replace it with a start node whose inputs carry the documents",
    ),
    "knowledge-index": (
        "a Dify knowledge base to write chunks into",
        "index the chunks into a cellwire knowledge base from a code node",
    ),
    "question-classifier": (
        "the question-classifier node, which this cellwire build does not provide",
        "install a cellwire version with LLM nodes, or replace it with an llm and if-else node",
    ),
    "parameter-extractor": (
        "the parameter-extractor node, which this cellwire build does not provide",
        "install a cellwire version with LLM nodes, or replace it with an llm and code node",
    ),
}


class _Format(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def need(node: Node) -> tuple[str, str] | None:
    """``(what the node needs, how to supply it)`` for a node of a type listed here."""
    found = registry.find(node.type)
    if found is None or getattr(found.run, "__module__", None) != __name__:
        return None
    need_text, fix = NEEDS[found.name]
    config = node.config if isinstance(node.config, Mapping) else {}
    values = _Format({k: v for k, v in config.items() if isinstance(v, (str, int, float, list))})
    values["provider"] = config.get("provider_name") or config.get("provider_id") or "?"
    return need_text.format_map(values), fix.format_map(values)


def _fail(ctx: NodeContext) -> NodeError:
    found = need(ctx.node)
    need_text, fix = found if found is not None else ("something unavailable", "replace it")
    title = ctx.node.title or ctx.node.id
    return NodeError(f"node '{ctx.node.id}' ({title}, {ctx.node.type}) cannot run here: it "
                     f"needs {need_text}", field="type", hint=fix,
                     error_type="UnsupportedNode")


async def _unsupported(ctx: NodeContext) -> NodeResult:
    raise _fail(ctx)


def _register(name: str, run: Callable[[NodeContext], Any] = _unsupported, *,
              config: type[NodeConfig] = NodeConfig, **options: Any) -> None:
    # A fallback: a built-in or a plugin of the same name replaces it, before or after.
    node_type(name, config=config, fallback=True, **options)(_copy(run, name))


def _copy(run: Callable[[NodeContext], Any], name: str) -> Callable[[NodeContext], Any]:
    async def run_node(ctx: NodeContext) -> NodeResult:
        return await run(ctx)

    run_node.__module__ = __name__
    run_node.__doc__ = f"{name}: kept from a Dify workflow; needs {NEEDS[name][0]}."
    return run_node


# -- tool ---------------------------------------------------------------------------------


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


async def _run_tool(ctx: NodeContext) -> NodeResult:
    """Call the Python tool registered under the node's tool name, if there is one."""
    config: ToolConfig = ctx.config
    tools = ctx.runtime.tools
    getter = getattr(tools, "get", None)
    tool = getter(config.tool_name) if callable(getter) and config.tool_name else None
    if not callable(tool):
        raise _fail(ctx)
    arguments: dict[str, Any] = {}
    for name, value in config.tool_configurations.items():
        arguments[name] = value
    for name, param in config.tool_parameters.items():
        field = f"tool_parameters.{name}"
        if not isinstance(param, ToolParameter):
            param = ToolParameter(type="mixed" if isinstance(param, str) else "constant",
                                  value=param)
        if param.type == "variable":
            arguments[name] = ctx.get(param.value, field=field)
        elif param.type == "mixed" and isinstance(param.value, str):
            arguments[name] = ctx.render(param.value)
        else:
            arguments[name] = param.value
    try:
        result = tool(**arguments)
        if inspect.isawaitable(result):
            result = await result
    except NodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user tool may raise anything
        raise NodeError(f"tool '{config.tool_name}' failed: {exc}", field="tool_name",
                        hint="check the tool's arguments") from None
    if isinstance(result, Mapping):
        outputs = {"text": "", "files": [], "json": [dict(result)], **result}
    else:
        outputs = {"text": "" if result is None else str(result), "files": [], "json": []}
    return NodeResult(inputs=arguments, outputs=outputs)


# -- agent ----------------------------------------------------------------------------------


class AgentConfig(NodeConfig):
    agent_strategy_provider_name: str = ""
    agent_strategy_name: str | None = None
    agent_parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _strategy_named(self) -> AgentConfig:
        # Agent v2 nodes bind a package instead of naming a strategy.
        binding = (self.model_extra or {}).get("agent_binding")
        if binding is None and not self.agent_strategy_name:
            raise ValueError("agent_strategy_name is empty: the agent names no strategy")
        return self


# -- human input ----------------------------------------------------------------------------


class UserAction(NodeConfig):
    id: str = Field(min_length=1, max_length=20)
    title: str = ""


class FormInput(NodeConfig):
    output_variable_name: str


class HumanInputConfig(NodeConfig):
    inputs: list[FormInput] = Field(default_factory=list)
    user_actions: list[UserAction] = Field(default_factory=list)

    @field_validator("user_actions")
    @classmethod
    def _unique_actions(cls, actions: list[UserAction]) -> list[UserAction]:
        _unique([a.id for a in actions], "action id")
        return actions

    @field_validator("inputs")
    @classmethod
    def _unique_inputs(cls, inputs: list[FormInput]) -> list[FormInput]:
        _unique([i.output_variable_name for i in inputs], "output_variable_name")
        return inputs


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is given twice")
        seen.add(value)


# -- triggers -------------------------------------------------------------------------------


class WebhookField(NodeConfig):
    name: str
    type: str = "string"
    required: bool = False


class WebhookTriggerConfig(NodeConfig):
    body: list[WebhookField] = Field(default_factory=list)


class ScheduleTriggerConfig(NodeConfig):
    mode: Literal["visual", "cron"] = "visual"
    cron_expression: str | None = None

    @model_validator(mode="after")
    def _cron_given(self) -> ScheduleTriggerConfig:
        if self.mode == "cron" and not (self.cron_expression or "").strip():
            raise ValueError("mode is 'cron' but cron_expression is missing")
        return self


# -- classifier and extractor (only when no real implementation is registered) ---------------


class ClassifierClass(NodeConfig):
    id: str
    name: str = ""


class QuestionClassifierConfig(NodeConfig):
    classes: list[ClassifierClass] = Field(default_factory=list)

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[ClassifierClass]) -> list[ClassifierClass]:
        _unique([c.id for c in classes], "class id")
        return classes


class ExtractorParameter(NodeConfig):
    name: str


class ParameterExtractorConfig(NodeConfig):
    parameters: list[ExtractorParameter] = Field(default_factory=list)


_register("tool", _run_tool, config=ToolConfig)
_register("agent", config=AgentConfig)
_register("human-input", config=HumanInputConfig,
          handles=lambda c: [*(a.id for a in c.user_actions), "__timeout"],
          outputs=lambda c: [*(i.output_variable_name for i in c.inputs), "__action_id",
                             "__action_value", "__rendered_content"])
_register("trigger-webhook", config=WebhookTriggerConfig, start=True)
_register("trigger-schedule", config=ScheduleTriggerConfig, start=True)
_register("trigger-plugin", start=True)
_register("datasource", start=True)
_register("knowledge-index")
_register("question-classifier", config=QuestionClassifierConfig,
          handles=lambda c: [k.id for k in c.classes],
          outputs=["class_name", "class_id", "class_label", "usage"])
_register("parameter-extractor", config=ParameterExtractorConfig,
          outputs=lambda c: [*(p.name for p in c.parameters), "__is_success", "__reason",
                             "__usage"])
