"""llm: render a prompt, call a chat model through the run's LLM router, stream the reply.

Config fields are Dify's (``model``, ``prompt_template``, ``context``, ``memory``, ``vision``,
``structured_output``...). The model is found by ``runtime.llm`` (an
:class:`~cellwire.services.llm.LLMRouter`); ``runtime.model_override`` routes every llm node
of a run to one model. Provider errors become node errors that name the model and the fix;
retryable ones (rate limits, overload) keep ``retry_after`` for the node's retry policy.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field

from cellwire.engine import FatalError, NodeContext, NodeError, NodeResult, Usage
from cellwire.model import NodeConfig, node_type
from cellwire.services.llm import (
    ChatAccumulator,
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    LLMRouter,
    ProviderError,
    RetryableProviderError,
    Route,
    default_router,
)
from cellwire.services.llm.base import ContentPart, ImageDetail, image_part, text_part
from cellwire.services.llm.cache import cache_key
from cellwire.services.llm.prices import Priced
from cellwire.services.llm.tokens import (
    MESSAGE_OVERHEAD,
    count_messages,
    count_text,
    estimate_usage,
)

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
    jinja2_variables: list[Jinja2Variable] = Field(default_factory=list)


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


def _node_error(exc: ProviderError, model: str) -> NodeError:
    message = f"model {model!r}: {exc}"
    hint = exc.hint or "check the model's provider configuration"
    if isinstance(exc, RetryableProviderError):
        return LLMError(message, field="model", hint=exc.hint or "retry later",
                        error_type=type(exc).__name__, retry_after=exc.retry_after)
    return LLMConfigError(message, field="model", hint=hint, error_type=type(exc).__name__)


# -- the node --------------------------------------------------------------------------------

_CONTEXT = "\x00cellwire:context\x00"
_HISTORIES = "\x00cellwire:histories\x00"
_THINK = re.compile(r"<think>(.*?)</think>\s*", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
# completion_params that have a field of their own in a ChatRequest.
_REQUEST_FIELDS = ("temperature", "top_p", "max_tokens", "stop", "response_format",
                   "json_schema")


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
    context = _context_text(ctx, config)
    variables = _jinja_variables(ctx, config)
    route = _route(ctx, config)
    request = _request(config, route.model, _render_messages(ctx, config, context, variables))
    if config.memory is not None:
        # The prompt without history sets the history's token budget.
        history = await read_history(ctx, config.memory, notes, route=route, request=request,
                                     limit=window_limit(config.memory), reply_node=ctx.node.id)
        if history:
            request.messages = _render_messages(ctx, config, context, variables, history)
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


# -- one model call: cache, stream, usage, cost, timings -------------------------------------


@dataclass(slots=True)
class Call:
    """A finished model call with what the trace needs to know about it."""

    route: Route
    response: ChatResponse
    priced: Priced
    latency: float
    #: Seconds to the first streamed piece (text, reasoning or tool call); None if none came.
    ttft: float | None
    cache_hit: bool = False
    #: The cost the call would have had, when a cache hit spared it.
    cost_saved: float = 0.0
    note: str = ""

    @property
    def usage_dict(self) -> dict[str, Any]:
        """Dify's ``usage`` output, plus latency, time to first token and flags."""
        usage, cost = self.response.usage, self.priced.cost
        data: dict[str, Any] = {
            "prompt_tokens": usage.prompt_tokens,
            "prompt_price": cost.prompt,
            "completion_tokens": usage.completion_tokens,
            "completion_price": cost.completion,
            "total_tokens": usage.total_tokens,
            "total_price": cost.total,
            "currency": cost.currency,
            "latency": round(self.latency, 6),
            "time_to_first_token": None if self.ttft is None else round(self.ttft, 6),
            "estimated": usage.estimated,
        }
        if self.cache_hit:
            data["cache_hit"] = True
        return data

    def node_usage(self) -> Usage:
        usage = self.response.usage
        if self.cache_hit:
            # Nothing was spent: the reply came from the cache.
            return Usage(model=self.route.id, currency=self.priced.cost.currency)
        return Usage(prompt_tokens=usage.prompt_tokens,
                     completion_tokens=usage.completion_tokens,
                     total_tokens=usage.total_tokens, cost=self.priced.cost.total,
                     currency=self.priced.cost.currency, model=self.route.id,
                     estimated=usage.estimated)

    def metadata(self) -> dict[str, Any]:
        """What the node execution's metadata records about the call."""
        usage, cost = self.response.usage, self.priced.cost
        data: dict[str, Any] = {
            "model": self.route.id,
            "total_tokens": 0 if self.cache_hit else usage.total_tokens,
            "total_price": 0.0 if self.cache_hit else cost.total,
            "currency": cost.currency,
            "latency": round(self.latency, 6),
            "time_to_first_token": None if self.ttft is None else round(self.ttft, 6),
            "usage_estimated": usage.estimated,
            **self.priced.as_dict(),
        }
        if usage.estimated:
            from cellwire.services.llm.tokens import method

            data["token_count_method"] = method()
        if self.cache_hit:
            data.update(cache_hit=True, cost_saved=self.cost_saved,
                        tokens_saved=usage.total_tokens)
        return data


async def invoke(ctx: NodeContext, route: Route, request: ChatRequest, *, cache: bool = False,
                 reasoning_format: str = "tagged", stream: bool = True) -> Call:
    """Call ``route`` with ``request`` for the node in ``ctx``: from the response cache when
    it is on and holds the reply, else streamed from the provider (to the run's stream when
    ``stream``); usage estimated when the server sent none; priced by the router."""
    router = _router(ctx)
    store = router.cache if (cache or router.cache_all) else None
    note = ""
    if (cache or router.cache_all) and store is None:
        note = "cache: this run has no run store, so replies are not cached"
    key = cache_key(route.provider.name, request) if store is not None else ""
    clock = ctx.runtime.clock
    t0 = clock.monotonic()
    if store is not None:
        cached = await ctx.to_thread(store.get, key)
        if cached is not None:
            latency = clock.monotonic() - t0
            if stream and cached.text:
                await ctx.stream(cached.text, selector=(ctx.node.id, "text"))
                await ctx.stream("", selector=(ctx.node.id, "text"), is_final=True)
            priced = router.priced(route, cached.usage)
            return Call(route, cached, priced, latency, latency, cache_hit=True,
                        cost_saved=priced.cost.total)
    response, ttft = await _call(ctx, route, request, reasoning_format, stream=stream)
    latency = clock.monotonic() - t0
    if response.usage.estimated:
        # The server sent no usage: count it with the documented tokenizer, off the loop.
        response.usage = await ctx.to_thread(estimate_usage, request.messages, response)
    if store is not None:
        await ctx.to_thread(store.put, key, route.provider.name, response)
    return Call(route, response, router.priced(route, response.usage), latency,
                None if ttft is None else ttft - t0, note=note)


def _router(ctx: NodeContext) -> LLMRouter:
    # Built lazily, so a runtime made before CELLWIRE_DEFAULT_MODEL was set still sees it.
    return ctx.runtime.llm if ctx.runtime.llm is not None else default_router()


def _route(ctx: NodeContext, config: LLMConfig) -> Route:
    return route_for(ctx, config.model)


def route_for(ctx: NodeContext, model: ModelConfig) -> Route:
    """The provider and model a node's ``model{provider, name}`` resolves to in this run."""
    override = ctx.runtime.model_override
    if not override and not model.name:
        raise LLMConfigError("no model is set", field="model.name",
                             hint="set model{provider, name}, e.g. provider 'openai', "
                                  "name 'gpt-4o', or run with model='scripted/echo'")
    try:
        return _router(ctx).resolve_config(model.provider, model.name, override=override)
    except ProviderError as exc:
        shown = override or "/".join(p for p in (model.provider, model.name) if p)
        raise _node_error(exc, shown) from None


def _context_text(ctx: NodeContext, config: LLMConfig) -> str:
    """Dify's ``{{#context#}}``: a string, or the contents of retrieved chunks joined."""
    context = config.context
    if context is None or not context.enabled or not context.variable_selector:
        return ""
    value = ctx.get(context.variable_selector, None, field="context.variable_selector")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [
            str(item.get("content", "")) if isinstance(item, dict) else _as_text(item)
            for item in value
        ]
        return "\n".join(p for p in parts if p)
    return _as_text(value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _jinja_variables(ctx: NodeContext, config: LLMConfig) -> dict[str, Any]:
    if config.prompt_config is None:
        return {}
    found: dict[str, Any] = {}
    for index, var in enumerate(config.prompt_config.jinja2_variables):
        if var.value_selector:
            found[var.variable] = ctx.get(
                var.value_selector, None,
                field=f"prompt_config.jinja2_variables[{index}].value_selector",
            )
        else:
            found[var.variable] = None
    return found


def _render_messages(ctx: NodeContext, config: LLMConfig, context: str,
                     variables: dict[str, Any], history: Sequence[tuple[str, str]] = ()
                     ) -> list[ChatMessage]:
    template = config.prompt_template
    if template is None:
        raise LLMConfigError("the prompt is missing", field="prompt_template",
                             hint="give a list of {role, text} messages")
    items = template if isinstance(template, list) else [template]
    # Completion mode has one prompt: the history goes in as text, at {{#histories#}}.
    histories = "" if isinstance(template, list) or config.memory is None else \
        histories_text(history, config.memory.role_prefix)
    messages: list[ChatMessage] = []
    for index, item in enumerate(items):
        field = f"prompt_template[{index}]" if isinstance(template, list) else "prompt_template"
        text = _render_one(ctx, item, field, context, variables, histories)
        if text:
            role = item.role if isinstance(template, list) else "user"
            if role not in ("system", "user", "assistant"):
                raise LLMConfigError(f"unknown role {role!r}", field=f"{field}.role",
                                     hint="use system, user or assistant")
            messages.append(ChatMessage(role, text))
    if config.memory is not None and isinstance(template, list):
        # Dify's chat nodes with memory send the user's message last, through the memory's
        # query template (``{{#sys.query#}}`` by default).
        query = ctx.pool.get(("sys", "query"), None)
        if query:
            # Dify's default template is "{{#sys.query#}}\n\n{{#sys.files#}}": files render as
            # no text there, they reach the model as image parts (vision).
            template_text = (config.memory.query_prompt_template or "{{#sys.query#}}"
                             ).replace("{{#sys.files#}}", "")
            text = ctx.render(template_text)
            messages.append(ChatMessage("user", text))
    if history and isinstance(template, list):
        # Dify puts the remembered turns after the prompt's messages, before the user's
        # message (the query, or else the prompt's last user message).
        past = [ChatMessage(role, text) for query, answer in history
                for role, text in (("user", query), ("assistant", answer)) if text]
        at = max((i for i, m in enumerate(messages) if m.role == "user"),
                 default=len(messages))
        messages[at:at] = past
    if not messages:
        raise LLMConfigError("the prompt renders to nothing", field="prompt_template",
                             hint="write some text in the prompt, or check its variables")
    return messages


def _render_one(ctx: NodeContext, item: PromptMessage, field: str, context: str,
                variables: dict[str, Any], histories: str = "") -> str:
    if item.edition_type == "jinja2":
        namespace = {k: ("" if v is None else v) for k, v in variables.items()}
        return ctx.render_jinja(item.jinja2_text or item.text or "", namespace,
                                field=f"{field}.jinja2_text")
    # Dify's special placeholders are not pool references: keep them out of the renderer.
    text = item.text.replace("{{#context#}}", _CONTEXT).replace("{{#histories#}}", _HISTORIES)
    if histories and _HISTORIES not in text:
        text = f"{_HISTORIES}\n{text}"  # as Dify does when a completion prompt has no slot
    text = ctx.render(text)  # plain: references only, as Dify's basic edition
    return text.replace(_CONTEXT, context).replace(_HISTORIES, histories)


# -- memory: earlier turns of the conversation, from the run store ---------------------------

#: The most turns Dify's memory remembers, with or without a window.
MAX_MEMORY_TURNS = 500
#: The history's token budget when the model's context size is unknown (Dify's
#: ``max_token_limit`` default).
DEFAULT_MEMORY_TOKENS = 2000


def window_limit(memory: MemoryConfig, *, enabled_only: bool = True) -> int | None:
    """The turns ``memory``'s window keeps; None for Dify's maximum. Dify's llm node reads
    ``window.size`` only when the window is enabled, its question classifier and parameter
    extractor whenever it is set (``enabled_only=False``)."""
    window = memory.window
    if enabled_only and not window.enabled:
        return None
    return window.size if window.size and window.size > 0 else None


async def read_history(ctx: NodeContext, memory: MemoryConfig | None, notes: list[str], *,
                       route: Route, request: ChatRequest, limit: int | None,
                       reserve: int = 0, reply_node: str | None = None
                       ) -> list[tuple[str, str]]:
    """Dify's chat memory: ``(query, answer)`` of the conversation's earlier runs, oldest
    first, at most ``limit`` of them (Dify's 500 when None), read from the run store.
    Conversations are told apart by ``sys.conversation_id``.

    As Dify's TokenBufferMemory, the oldest turns are dropped until the rest fit the model's
    input context less ``request`` (the prompt without history, its tools and schema), its
    ``max_tokens`` and ``reserve`` tokens; 2000 tokens when the context is unknown. A note
    in ``notes`` says why no history, or less of it, is sent. ``reply_node`` names the node
    whose ``text`` is the reply of a run without an answer node."""
    if memory is None:
        return []
    conversation = ctx.pool.get(("sys", "conversation_id"), None)
    if conversation is None or conversation == "":
        notes.append("memory: the run has no sys.conversation_id, so no history is sent")
        return []
    store = _run_store(ctx)
    if store is None:
        notes.append("memory: this run has no run store (store=False), so no history is sent")
        return []
    workflow = str(ctx.pool.get(("sys", "workflow_id"), ""))
    try:
        turns = await ctx.to_thread(store.conversation_turns, workflow, str(conversation),
                                    min(limit or MAX_MEMORY_TURNS, MAX_MEMORY_TURNS),
                                    node_id=reply_node, exclude_run=ctx.run_id)
    except sqlite3.Error as exc:
        notes.append(f"memory: the run store could not be read ({exc}); no history is sent")
        return []
    history = [(turn.query, turn.answer) for turn in turns]
    if not history:
        return history
    context = context_size(ctx, route)
    # Token counts load tiktoken's encoding and walk the text: off the event loop.
    kept, budget, prompt = await ctx.to_thread(_fit_history, history, request, context,
                                               reserve)
    if len(kept) < len(history):
        dropped = len(history) - len(kept)
        if context is None:
            why = (f"Dify's default history budget of {budget} tokens (the model's context "
                   "size is unknown)")
        else:
            why = (f"a history budget of {budget} tokens: the model's input context of "
                   f"{context} less the prompt's {prompt}"
                   + (f" and max_tokens {request.max_tokens}" if request.max_tokens else "")
                   + (f" and {reserve} held back" if reserve else ""))
        notes.append(f"memory: left out the {dropped} oldest of {len(history)} earlier turns "
                     f"to fit {why}")
    return kept


def context_size(ctx: NodeContext, route: Route) -> int | None:
    """The input context of the routed model in tokens: a local model's own window, else
    the price table's ``max_input_tokens``; None when unknown."""
    size = getattr(route.provider, "n_ctx", None)
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    return _router(ctx).prices.max_input_tokens(route.provider.name, route.model)


def _fit_history(history: list[tuple[str, str]], request: ChatRequest, context: int | None,
                 reserve: int) -> tuple[list[tuple[str, str]], int, int]:
    """The most recent turns that fit the budget, the budget and the prompt's tokens."""
    prompt = 0
    if context is None:
        budget = DEFAULT_MEMORY_TOKENS
    else:
        prompt = count_messages(request.messages) + sum(
            count_text(json.dumps(part, ensure_ascii=False))
            for part in (request.tools or None, request.json_schema) if part)
        budget = max(context - (request.max_tokens or 0) - prompt - reserve, 0)
    kept: list[tuple[str, str]] = []
    used = 0
    for query, answer in reversed(history):
        used += sum(MESSAGE_OVERHEAD + count_text(text) for text in (query, answer) if text)
        if used > budget:
            break
        kept.append((query, answer))
    kept.reverse()
    return kept, budget, prompt


def _run_store(ctx: NodeContext) -> Any:
    # The store that records this run (its sink is subscribed to the runtime); duck-typed,
    # as nodes do not import the store.
    for sink in ctx.runtime.sinks:
        store = getattr(sink, "store", None)
        if callable(getattr(store, "conversation_turns", None)):
            return store
    return None


def histories_text(history: Sequence[tuple[str, str]],
                   role_prefix: dict[str, str] | None = None) -> str:
    """The turns as Dify writes them into a prompt: ``Human: ...`` / ``Assistant: ...``
    lines, or the prefixes of ``role_prefix``."""
    prefix = role_prefix or {}
    user, assistant = prefix.get("user") or "Human", prefix.get("assistant") or "Assistant"
    lines = [f"{role}: {text}" for query, answer in history
             for role, text in ((user, query), (assistant, answer)) if text]
    return "\n".join(lines)


def memory_section(history: Sequence[tuple[str, str]]) -> str:
    """The memory section Dify's question classifier and parameter extractor put in their
    system prompts: the turns inside ``<histories>`` tags (empty on a first turn)."""
    return ("### Memory\nHere is the chat history between the human and the assistant, "
            "inside <histories></histories> XML tags.\n"
            f"<histories>\n{histories_text(history)}\n</histories>")


# -- vision: image files as parts of the user's message --------------------------------------

#: The largest local image sent (it goes as base64); larger ones are a configuration error.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
_REMOTE = ("http://", "https://", "data:")
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


async def attach_images(ctx: NodeContext, vision: VisionConfig, messages: list[ChatMessage],
                         notes: list[str]) -> None:
    """Put the image files at ``vision.configs.variable_selector`` before the text of the last
    user message (a new user message when the last is not one), as Dify does."""
    configs = vision.configs or VisionConfigs()
    field = "vision.configs.variable_selector"
    value = ctx.get(configs.variable_selector, None, field=field)
    files = value if isinstance(value, list) else [] if value is None else [value]
    parts: list[ContentPart] = []
    skipped: list[str] = []
    for index, item in enumerate(files):
        where = f"{field}[{index}]" if isinstance(value, list) else field
        url = await _image_url(ctx, item, where)
        if url is None:
            skipped.append(_file_name(item))
        else:
            parts.append(image_part(url, configs.detail))
    if skipped:
        notes.append(f"vision: {len(skipped)} file(s) that are not images were not sent: "
                     + ", ".join(skipped))
    if not parts:
        return
    last = messages[-1]
    if last.role == "user" and not last.tool_calls:
        if isinstance(last.content, str):
            last.content = [*parts, text_part(last.content)] if last.content else parts
        else:
            last.content = [*parts, *last.content]
    else:
        messages.append(ChatMessage("user", parts))


async def _image_url(ctx: NodeContext, item: Any, field: str) -> str | None:
    """A URL (http, https or data) for the image ``item``; None when it is not an image.

    ``item`` is a Dify file object (``type``, ``transfer_method``, ``remote_url`` / ``url``,
    cellwire's ``path``), a URL, or the path of a local file, which is read and sent as a
    base64 ``data:`` URL."""
    mime: str | None = None
    if isinstance(item, str):
        url, path = (item, None) if item.startswith(_REMOTE) else (None, item)
    elif isinstance(item, dict):
        mime = str(item.get("mime_type") or "") or None
        if item.get("type") not in (None, "", "image") or (
                mime and not mime.startswith("image/")):
            return None
        url = str(item.get("remote_url") or item.get("url") or "") or None
        path = str(item.get("path") or "") or None
        if url is not None and not url.startswith(_REMOTE):
            url, path = None, path or url  # a local path (or file:// URL) given as its url
        if url is None and path is None:
            raise LLMConfigError(
                f"the file {_file_name(item)} has no url and no path", field=field,
                hint="give the file a remote_url (transfer_method: remote_url), or the "
                     "path of a local copy (transfer_method: local_file, path: ...): "
                     "cellwire has no copy of files uploaded to Dify")
    else:
        raise LLMConfigError(f"a {type(item).__name__} is not a file", field=field,
                             hint="select a file variable: Dify file objects, URLs or paths")
    if url is not None:
        if url.startswith("data:") and not url.startswith("data:image/"):
            return None
        return url
    assert path is not None
    return await ctx.to_thread(_data_url, path, mime, field)


def _data_url(path: str, mime: str | None, field: str) -> str | None:
    """The local image at ``path`` as a base64 ``data:`` URL (None if it is no image)."""
    if path.startswith("file://"):
        path = unquote(urlsplit(path).path)
    target = Path(path).expanduser()
    try:
        with target.open("rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise LLMConfigError(f"cannot read the image {path!r}: {exc.strerror or exc}",
                             field=field, hint="check the file's path") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise LLMConfigError(
            f"the image {target.name!r} is larger than {_size(MAX_IMAGE_BYTES)}",
            field=field, hint="send a smaller image, or a URL the model can fetch")
    sniffed = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
    if sniffed is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        sniffed = "image/webp"
    mime = mime or sniffed or mimetypes.guess_type(target.name)[0]
    if not mime or not mime.startswith("image/"):
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _size(count: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def _file_name(item: Any) -> str:
    if isinstance(item, dict):
        name = item.get("filename") or item.get("name") or item.get("remote_url") or \
            item.get("url") or item.get("path") or item.get("upload_file_id") or "file"
        return repr(str(name))
    return repr(str(item)[:100])


def _request(config: LLMConfig, model: str, messages: list[ChatMessage]) -> ChatRequest:
    params = dict(config.model.completion_params or {})
    stop = params.get("stop") or []
    request = ChatRequest(
        model=model,
        messages=messages,
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        max_tokens=params.get("max_tokens"),
        stop=[stop] if isinstance(stop, str) else list(stop),
        params={k: v for k, v in params.items() if k not in _REQUEST_FIELDS},
    )
    schema = params.get("json_schema")
    if params.get("response_format") in ("text", "json_object", "json_schema"):
        request.response_format = params["response_format"]
    if config.structured:
        schema = config.structured_output.json_schema if config.structured_output else None
        if not schema:
            raise LLMConfigError("structured output is on but has no schema",
                                 field="structured_output.schema",
                                 hint="give a JSON Schema, or turn structured output off")
        request.response_format = "json_schema"
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise LLMConfigError(f"the JSON schema is not valid JSON: {exc}",
                                 field="structured_output.schema",
                                 hint="write the schema as a JSON object") from None
    request.json_schema = schema or None
    return request


async def _call(ctx: NodeContext, route: Route, request: ChatRequest, reasoning_format: str,
                *, stream: bool = True) -> tuple[ChatResponse, float | None]:
    """Stream the reply (to the run's event stream when ``stream``) and collect it; returns
    it with the clock reading at its first piece."""
    selector = (ctx.node.id, "text")
    accumulator = ChatAccumulator()
    clock = ctx.runtime.clock
    first: float | None = None
    # Tagged mode streams reasoning inside <think> tags, as the final text holds it.
    tagged = reasoning_format == "tagged"
    thinking = False
    try:
        async for chunk in route.provider.stream(request):
            accumulator.add(chunk)
            if first is None and _has_content(chunk):
                first = clock.monotonic()
            if not stream:
                continue
            if tagged and chunk.reasoning:
                if not thinking:
                    thinking = True
                    await ctx.stream("<think>\n", selector=selector)
                await ctx.stream(chunk.reasoning, selector=selector)
            if chunk.text:
                if thinking:
                    thinking = False
                    await ctx.stream("\n</think>\n", selector=selector)
                await ctx.stream(chunk.text, selector=selector)
    except ProviderError as exc:
        raise _node_error(exc, route.id) from None
    if stream:
        if thinking:
            await ctx.stream("\n</think>\n", selector=selector)
        await ctx.stream("", selector=selector, is_final=True)
    return accumulator.response(route.id, request.messages), first


def _has_content(chunk: ChatChunk) -> bool:
    return bool(chunk.text or chunk.reasoning or chunk.tool_calls)


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
