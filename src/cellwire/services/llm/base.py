"""The chat provider interface: requests, responses, stream chunks, usage and errors.

Every provider (the scripted test double now; OpenAI-compatible, Anthropic and llama.cpp
later) speaks these types, so nodes never see a vendor's wire format. Prices are not part
of a response: the router computes cost from usage, so cost tables live in one place.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Required, TypedDict, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]
ResponseFormat = Literal["text", "json_object", "json_schema"]
ImageDetail = Literal["auto", "low", "high"]


# -- messages and requests ------------------------------------------------------------------


class TextPart(TypedDict):
    """Text in a message of several parts."""

    type: Literal["text"]
    text: str


class ImageURL(TypedDict, total=False):
    url: Required[str]
    detail: ImageDetail


class ImagePart(TypedDict):
    """An image: an ``http(s)`` URL, or a ``data:<type>;base64,...`` URL of its bytes.

    The shape is OpenAI's content part, which OpenAI-compatible servers take as is; other
    providers convert it (Anthropic: an ``image`` block with a url or base64 source)."""

    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = TextPart | ImagePart


def text_part(text: str) -> TextPart:
    return {"type": "text", "text": text}


def image_part(url: str, detail: ImageDetail | None = None) -> ImagePart:
    image: ImageURL = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _shown_url(url: str) -> str:
    # Traces keep a data URL's type and size, not its bytes.
    if url.startswith("data:") and "," in url:
        head, data = url.split(",", 1)
        size = len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))
        return f"{head},<{size} bytes>"
    return url


@dataclass(slots=True)
class ToolCall:
    """A function call the model asks for; ``arguments`` is JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        """The arguments as Python values; raises ``ValueError`` on malformed JSON."""
        return json.loads(self.arguments or "{}")


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of a streamed tool call; fragments with the same ``index`` concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class ChatMessage:
    """One message of a conversation. ``content`` is text, or text and image parts."""

    role: Role | str
    content: str | list[ContentPart] = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: For ``role="tool"``: the id of the call this message answers.
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text, with non-text parts (images, files) left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")

    @property
    def images(self) -> list[ImagePart]:
        """The message's image parts."""
        if isinstance(self.content, str):
            return []
        return [p for p in self.content if p.get("type") == "image_url"]  # type: ignore[misc]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form for traces (``process_data``); images by URL, data URLs by
        type and size only."""
        data: dict[str, Any] = {"role": self.role, "text": self.text}
        if images := self.images:
            data["images"] = [_shown_url(p["image_url"]["url"]) for p in images]
        if self.tool_calls:
            data["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in self.tool_calls
            ]
        if self.tool_call_id:
            data["tool_call_id"] = self.tool_call_id
        return data


@dataclass(slots=True)
class ChatRequest:
    """What a node asks a provider for. ``model`` is the provider's own model name."""

    model: str
    messages: list[ChatMessage]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    #: Function tools in OpenAI's JSON form: ``{"type": "function", "function": {...}}``.
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    #: The JSON Schema the reply must follow when ``response_format == "json_schema"``.
    json_schema: dict[str, Any] | None = None
    #: Provider-specific parameters passed through as given (seed, presence_penalty, ...).
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def system_prompt(self) -> str:
        return "\n".join(m.text for m in self.messages if m.role == "system")

    @property
    def last_user_message(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""


# -- responses --------------------------------------------------------------------------------


@dataclass(slots=True)
class TokenUsage:
    """Tokens of one call; ``estimated`` when counted locally instead of by the provider."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.total_tokens + other.total_tokens,
            self.estimated or other.estimated,
        )


@dataclass(slots=True)
class Cost:
    """The price of one call, split as Dify reports it."""

    prompt: float = 0.0
    completion: float = 0.0
    currency: str = "USD"

    @property
    def total(self) -> float:
        return self.prompt + self.completion


@dataclass(slots=True)
class ChatResponse:
    """A finished reply. ``reasoning`` holds the model's thinking when it reports it apart."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: TokenUsage = field(default_factory=TokenUsage)
    model: str = ""
    #: The provider's own response object, for debugging; never shown in traces.
    raw: Any = field(default=None, repr=False)


@dataclass(slots=True)
class ChatChunk:
    """One piece of a streamed reply. Usage and finish reason usually come with the last."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    usage: TokenUsage | None = None
    finish_reason: str | None = None

    @property
    def size(self) -> int:
        """Characters of the reply it carries (text, reasoning, tool-call names and
        arguments)."""
        size = len(self.text) + len(self.reasoning)
        if self.tool_calls:
            size += sum(len(d.arguments) + len(d.name or "") for d in self.tool_calls)
        return size


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token) for providers that report none."""
    return math.ceil(len(text) / 4) if text else 0


class ChatAccumulator:
    """Builds a :class:`ChatResponse` from stream chunks, joining tool-call fragments."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, ToolCallDelta] = {}
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None

    def add(self, chunk: ChatChunk) -> None:
        if chunk.text:
            self._text.append(chunk.text)
        if chunk.reasoning:
            self._reasoning.append(chunk.reasoning)
        for delta in chunk.tool_calls:
            call = self._calls.setdefault(delta.index, ToolCallDelta(delta.index))
            call.id = delta.id or call.id
            call.name = delta.name or call.name
            call.arguments += delta.arguments
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason

    def response(self, model: str = "",
                 messages: Iterable[ChatMessage] = ()) -> ChatResponse:
        """The reply so far; without reported usage, tokens are estimated from ``messages``."""
        text, reasoning = "".join(self._text), "".join(self._reasoning)
        calls = [
            ToolCall(d.id or f"call_{d.index}", d.name or "", d.arguments or "{}")
            for _, d in sorted(self._calls.items())
        ]
        usage = self.usage
        if usage is None:
            prompt = sum(estimate_tokens(m.text) for m in messages)
            completion = estimate_tokens(text + reasoning + "".join(c.arguments for c in calls))
            usage = TokenUsage(prompt, completion, prompt + completion, estimated=True)
        finish = self.finish_reason or ("tool_calls" if calls else "stop")
        return ChatResponse(text, reasoning, calls, finish, usage, model)


# -- the provider protocol ----------------------------------------------------------------


@runtime_checkable
class Provider(Protocol):
    """A source of chat completions and embeddings, registered in a router under ``name``."""

    name: str

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The whole reply at once."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """The reply piece by piece (an async generator); the last chunk carries usage."""
        ...

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """One vector per text."""
        ...

    async def models(self) -> list[str]:
        """The model names this provider serves (its own names, without the provider)."""
        ...


# -- errors ----------------------------------------------------------------------------------


class ProviderError(Exception):
    """A provider call failed in a way no retry fixes (bad request, auth, unknown model)."""

    retryable = False

    def __init__(self, message: str, *, provider: str | None = None, model: str | None = None,
                 status: int | None = None, hint: str = ""):
        self.provider = provider
        self.model = model
        self.status = status
        self.hint = hint
        super().__init__(message)


class RetryableProviderError(ProviderError):
    """A failure worth another attempt (overload, 5xx, dropped connection).

    ``retry_after`` (seconds) is what the server asked for; the engine's backoff honours it.
    """

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RateLimitError(RetryableProviderError):
    """HTTP 429 or the provider's own rate limit."""


class ProviderTimeout(RetryableProviderError):
    """The provider did not answer in time."""


class AuthenticationError(ProviderError):
    """Missing or rejected credentials."""


class UnknownModelError(ProviderError):
    """No provider is configured for the model a node asks for."""
