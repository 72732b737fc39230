"""llm: render a prompt, call a chat model through the run's LLM router, stream the reply.

Config fields are Dify's (``model``, ``prompt_template``, ``context``, ``memory``, ``vision``,
``structured_output``...). The model is found by ``runtime.llm`` (an
:class:`~cellwire.services.llm.LLMRouter`); ``runtime.model_override`` routes every llm node
of a run to one model. Provider errors become node errors that name the model and the fix;
retryable ones (rate limits, overload) keep ``retry_after`` for the node's retry policy.

The package's modules: :mod:`.config` (config and errors), :mod:`.prompt` (the prompt and the
request), :mod:`.memory` (chat memory), :mod:`.vision` (image files), :mod:`.call` (one model
call: cache, stream, usage) and :mod:`.node` (the node). The question classifier and the
parameter extractor build on the same pieces.
"""

from .call import Call, invoke, route_for
from .config import (
    ContextConfig,
    Jinja2Variable,
    LLMConfig,
    LLMConfigError,
    LLMError,
    MemoryConfig,
    MemoryWindow,
    ModelConfig,
    PromptConfig,
    PromptMessage,
    StructuredOutput,
    VisionConfig,
    VisionConfigs,
)
from .memory import (
    DEFAULT_MEMORY_TOKENS,
    MAX_MEMORY_TURNS,
    context_size,
    histories_text,
    memory_section,
    read_history,
    window_limit,
)
from .node import parse_json, run
from .vision import MAX_IMAGE_BYTES, attach_images

__all__ = [
    "DEFAULT_MEMORY_TOKENS", "MAX_IMAGE_BYTES", "MAX_MEMORY_TURNS", "Call", "ContextConfig",
    "Jinja2Variable", "LLMConfig", "LLMConfigError", "LLMError", "MemoryConfig", "MemoryWindow",
    "ModelConfig", "PromptConfig", "PromptMessage", "StructuredOutput", "VisionConfig",
    "VisionConfigs", "attach_images", "context_size", "histories_text", "invoke",
    "memory_section", "parse_json", "read_history", "route_for", "run", "window_limit",
]
