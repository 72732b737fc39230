"""The llm node's config (Dify's fields) and its errors; shared with the question classifier
and the parameter extractor."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from cellwire.engine import FatalError, NodeError
from cellwire.model import NodeConfig
from cellwire.services.llm import ProviderError, RetryableProviderError
from cellwire.services.llm.base import ImageDetail

from ..config_checks import empty_list

# -- config ----------------------------------------------------------------------------------


class ModelConfig(NodeConfig):
    #: Dify's provider identity, ``langgenius/openai/openai`` or just ``openai``.
    provider: str = ""
    name: str = ""
    mode: str = "chat"
    completion_params: dict[str, Any] | None = None


class PromptMessage(NodeConfig):
    role: str = "user"
    text: str = ""
    edition_type: Literal["basic", "jinja2"] | None = None
    jinja2_text: str | None = None


class Jinja2Variable(NodeConfig):
    variable: str
    value_selector: list[str] = Field(default_factory=list)


class PromptConfig(NodeConfig):
    jinja2_variables: Annotated[list[Jinja2Variable], BeforeValidator(empty_list)] = Field(
        default_factory=list)


class ContextConfig(NodeConfig):
    enabled: bool = False
    variable_selector: list[str] | None = None


class MemoryWindow(NodeConfig):
    enabled: bool = False
    size: int | None = None


class MemoryConfig(NodeConfig):
    window: MemoryWindow = Field(default_factory=MemoryWindow)
    role_prefix: dict[str, str] | None = None
    query_prompt_template: str | None = None


class VisionConfigs(NodeConfig):
    #: Dify's default: the files sent with the user's message.
    variable_selector: list[str] = Field(default_factory=lambda: ["sys", "files"])
    detail: ImageDetail = "high"


class VisionConfig(NodeConfig):
    enabled: bool = False
    configs: VisionConfigs | None = None


class StructuredOutput(NodeConfig):
    # ``schema`` would shadow a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] | str | None = Field(None, alias="schema")


class LLMConfig(NodeConfig):
    model: ModelConfig = Field(default_factory=ModelConfig)
    #: Chat mode: a list of messages; completion mode: one ``{text}``.
    prompt_template: list[PromptMessage] | PromptMessage | None = None
    prompt_config: PromptConfig | None = None
    context: ContextConfig | None = None
    memory: MemoryConfig | None = None
    vision: VisionConfig | None = None
    structured_output_switch_on: bool | None = None
    #: The older name of ``structured_output_switch_on``.
    structured_output_enabled: bool | None = None
    structured_output: StructuredOutput | None = None
    #: ``tagged`` keeps ``<think>`` blocks in ``text``; ``separated`` moves them to
    #: ``reasoning_content``.
    reasoning_format: Literal["tagged", "separated"] = "tagged"
    #: Keep replies in the run store's response cache and answer repeats from it.
    cache: bool = False

    @property
    def structured(self) -> bool:
        return bool(self.structured_output_switch_on or self.structured_output_enabled)


def _outputs(config: LLMConfig) -> list[str]:
    names = ["text", "reasoning_content", "usage", "finish_reason"]
    return [*names, "structured_output"] if config.structured else names


# -- errors ----------------------------------------------------------------------------------


class LLMError(NodeError):
    """A model call failed in a way another attempt may fix; ``retry_after`` in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class LLMConfigError(NodeError, FatalError):
    """A model call that cannot succeed as configured: no retries."""


def node_error(exc: ProviderError, model: str) -> NodeError:
    message = f"model {model!r}: {exc}"
    hint = exc.hint or "check the model's provider configuration"
    if isinstance(exc, RetryableProviderError):
        return LLMError(message, field="model", hint=exc.hint or "retry later",
                        error_type=type(exc).__name__, retry_after=exc.retry_after)
    return LLMConfigError(message, field="model", hint=hint, error_type=type(exc).__name__)

