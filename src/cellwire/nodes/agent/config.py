"""The agent node's config: Dify's agent node fields (strategy, and the parameters ``model``,
``tools``, ``instruction``, ``query``, ``maximum_iterations`` in ``{type, value}`` form)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from cellwire.engine import NodeContext, NodeError
from cellwire.model import NodeConfig

#: Dify's default strategies (the langgenius/agent plugin): their names, as cellwire runs them.
STRATEGIES = {"function_calling": "function_calling", "functioncalling": "function_calling",
              "react": "react"}
#: Dify's default number of rounds (maximum_iterations).
DEFAULT_ITERATIONS = 3
#: The most rounds cellwire allows one agent node.
MAX_ITERATIONS = 99


class AgentTool(NodeConfig):
    """One tool the agent may use (Dify's entry in ``agent_parameters.tools``)."""

    enabled: bool = True
    provider_name: str = ""
    tool_name: str = ""
    type: str = ""
    #: Arguments: ``{name: {auto: 1}}`` the model fills in, ``{auto: 0, value: ...}`` fixed.
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: Fixed configuration values: ``{name: {value: ...}}``.
    settings: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


class AgentConfig(NodeConfig):
    agent_strategy_provider_name: str = ""
    agent_strategy_name: str | None = None
    agent_strategy_label: str = ""
    agent_parameters: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _strategy_named(self) -> AgentConfig:
        # Agent v2 nodes bind a package instead of naming a strategy.
        binding = (self.model_extra or {}).get("agent_binding")
        if binding is None and not self.agent_strategy_name:
            raise ValueError("agent_strategy_name is empty: the agent names no strategy "
                             "(use 'function_calling' or 'ReAct')")
        return self

    @property
    def package_ref(self) -> str | None:
        """The Agent package an agent v2 node (Dify 1.16, DSL 0.7.0) binds, else None."""
        binding = (self.model_extra or {}).get("agent_binding")
        if not isinstance(binding, Mapping):
            return None
        return str(binding.get("package_ref") or binding.get("agent_id") or "?")

    @property
    def strategy(self) -> str | None:
        """``function_calling``, ``react``, or None for a strategy cellwire does not run."""
        name = (self.agent_strategy_name or "").replace("-", "_").replace(" ", "").lower()
        return STRATEGIES.get(name)

    def raw(self, name: str) -> Any:
        """A parameter's value as written (``{type, value}`` unwrapped)."""
        entry = self.agent_parameters.get(name)
        if isinstance(entry, Mapping) and "value" in entry and "type" in entry:
            return entry["value"]
        return entry

    def tools(self) -> list[AgentTool]:
        """The enabled tools (Dify's entries; disabled ones are left out, as in Dify)."""
        value = self.raw("tools") or []
        if not isinstance(value, list):
            raise NodeError("tools must be a list of tools", field="agent_parameters.tools",
                            hint="pick the agent's tools again", fatal=True)
        out = [AgentTool.model_validate(v) for v in value if isinstance(v, Mapping)]
        return [t for t in out if t.enabled]


def parameter(ctx: NodeContext, config: AgentConfig, name: str) -> Any:
    """A parameter's value in this run: ``variable`` read from the pool, ``mixed`` and
    constant text rendered (Dify renders both), anything else as written."""
    entry = config.agent_parameters.get(name)
    field = f"agent_parameters.{name}"
    if isinstance(entry, Mapping) and "type" in entry and "value" in entry:
        kind, value = entry["type"], entry["value"]
    else:
        kind, value = "constant", entry
    if kind == "variable":
        if not isinstance(value, list):
            raise NodeError(f"a variable parameter needs a selector, got {value!r}",
                            field=field, hint="give it as ['node_id', 'output']", fatal=True)
        return ctx.get(value, field=field)
    if isinstance(value, str):
        return ctx.render(value)
    return value


def iterations(ctx: NodeContext, config: AgentConfig) -> int:
    # 'maximum_iterations' in Dify's agent strategies; some plugins say 'max_iterations'.
    value = parameter(ctx, config, "maximum_iterations")
    if value in (None, ""):
        value = parameter(ctx, config, "max_iterations")
    if value in (None, ""):
        return DEFAULT_ITERATIONS
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise NodeError(f"maximum_iterations is {value!r}, not a number",
                        field="agent_parameters.maximum_iterations",
                        hint="give a whole number, e.g. 5", fatal=True) from None
    if not 1 <= count <= MAX_ITERATIONS:
        raise NodeError(f"maximum_iterations is {count}", field="agent_parameters"
                        ".maximum_iterations", hint=f"give 1 to {MAX_ITERATIONS}", fatal=True)
    return count


#: Why an agent v2 node cannot run here, and the fix (the validator and the node say both).
AGENT_V2_NEED = ("a Dify 1.16 Agent (agent v2, package {ref!r}), which cellwire does not run: "
                 "it runs Dify's agent strategies (function_calling, ReAct)")
AGENT_V2_FIX = ("replace it with an agent node using the function_calling strategy, or an llm "
                "node with the package's prompt")
