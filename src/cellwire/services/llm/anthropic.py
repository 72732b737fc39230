"""AnthropicProvider: Claude models over Anthropic's native Messages API (``/v1/messages``).

The mapping from the provider interface:

* system messages become the top-level ``system`` string; the others alternate user and
  assistant (consecutive messages of one role are merged, as the API requires);
* image parts become ``image`` blocks, a URL source or base64 data for ``data:`` URLs;
* tools are sent as ``{name, description, input_schema}``; assistant tool calls become
  ``tool_use`` blocks and ``role="tool"`` messages ``tool_result`` blocks;
* structured output (``json_schema``) is a forced tool whose input is the reply, since the
  Messages API has no response format; ``json_object`` asks for JSON in the system prompt;
* streaming reads the event stream: ``message_start`` (input tokens), ``content_block_start``
  / ``content_block_delta`` (``text_delta``, ``input_json_delta``, ``thinking_delta``),
  ``message_delta`` (stop reason, output tokens), ``ping`` and ``error`` events;
* stop reasons map to ``stop``, ``length`` and ``tool_calls``.

Resilience is the OpenAI-compatible provider's: HTTP 429 (with ``retry-after``), 5xx and 529
``overloaded_error``, overload errors inside a stream, timeouts and dropped connections raise
retryable errors for the node's retry policy, and ``x-should-retry`` overrides that choice as
Anthropic's SDKs let it; only a connection that could not be opened is retried here. Client-side limits come from the process-wide :data:`RATE_LIMITS`; a 429, or an
``anthropic-ratelimit-*-remaining: 0`` header, also holds every later request of the model
until the server's reset. The API key never appears in an error message.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import httpx
import orjson

from .base import (
    AuthenticationError,
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ProviderError,
    RateLimitError,
    RetryableProviderError,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    UnknownModelError,
    estimate_tokens,
)
from .pools import (
    MAX_REPLY,
    HTTPProvider,
    Timeouts,
    body_pieces,
    broken_off,
    drain,
    stream_event,
)
from .ratelimit import Permit, RateLimits
from .resilience import RetryPolicy, parse_retry_after
from .sse import SSEDecoder

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
#: The Messages API requires ``max_tokens``; this is sent when a node sets none.
DEFAULT_MAX_TOKENS = 4096
#: The forced tool that carries structured output.
JSON_TOOL = "json_output"
#: The limits ``anthropic-ratelimit-<kind>-remaining`` / ``-reset`` headers report.
_LIMIT_KINDS = ("requests", "tokens", "input-tokens", "output-tokens")
#: Error types of a stream's ``error`` event that another attempt may get past.
_RETRYABLE_TYPES = ("overloaded_error", "api_error", "rate_limit_error", "timeout_error")

_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
         "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}


class AnthropicProvider(HTTPProvider):
    """Chat over Anthropic's Messages API through a pool of keep-alive connections.

    ``timeouts``, ``retry``, ``rpm`` / ``tpm`` / ``model_limits``, ``rate_limits``, and
    ``client``, ``transport``, ``verify``, ``cert`` and ``proxy`` (how requests travel),
    ``max_body`` (the cap on a reply, bytes): see
    :class:`~cellwire.services.llm.pools.HTTPProvider`.
    """

    def __init__(self, *, name: str = "anthropic", base_url: str | None = None,
                 api_key: str | None = None,
                 timeouts: Timeouts | Mapping[str, float] | None = None,
                 retry: RetryPolicy | Mapping[str, Any] | None = None,
                 rpm: float | None = None, tpm: float | None = None,
                 model_limits: Mapping[str, tuple[float | None, float | None]] | None = None,
                 rate_limits: RateLimits | None = None, max_connections: int = 100,
                 max_tokens: int = DEFAULT_MAX_TOKENS, client: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 verify: bool | str | ssl.SSLContext = True,
                 cert: str | tuple[str, str] | None = None, proxy: str | None = None,
                 max_body: int = MAX_REPLY):
        super().__init__(name, base_url=(base_url or DEFAULT_BASE_URL).rstrip("/")
                         .removesuffix("/v1"), api_key=api_key, timeouts=timeouts,
                         retry=retry, rpm=rpm, tpm=tpm, model_limits=model_limits,
                         rate_limits=rate_limits, max_connections=max_connections,
                         client=client, transport=transport, verify=verify, cert=cert,
                         proxy=proxy, max_body=max_body)
        self.max_tokens = max_tokens

    def _pool_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    # -- the provider protocol -----------------------------------------------------------------

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        raise ProviderError("Anthropic's API has no embeddings", provider=self.name,
                            model=model, hint="use an OpenAI-compatible embedding model")

    async def models(self) -> list[str]:
        reply = await self._open("GET", "v1/models", None, None)
        try:
            data = self._json_reply(reply, await self._read_reply(reply, None), None)
        finally:
            await reply.aclose()
        items = data.get("data", []) if isinstance(data, dict) else []
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

    # -- one attempt ---------------------------------------------------------------------------

    async def _chat_once(self, request: ChatRequest) -> ChatResponse:
        body = self.body(request)
        permit = await self._acquire(request)
        used = 0
        try:
            with self._late(request.model):
                reply = await self._open("POST", "v1/messages", body, request.model)
            try:
                content = await self._read_reply(reply, request.model)
            finally:
                await reply.aclose()
            response = self._response(request, self._json_reply(reply, content, request.model),
                                      content)
            used = response.usage.total_tokens
            return response
        finally:
            permit.settle(used)

    async def _stream_once(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body = self.body(request, stream=True)
        permit = await self._acquire(request)
        decoder = _StreamDecoder(self, request)
        model = request.model
        notice = self._late(model).start()
        try:
            reply = await self._open("POST", "v1/messages", body, model)
            pieces = body_pieces(reply)
            waiting_for = "body"
            start = b""
            size = events = delivered = 0
            try:
                sse = SSEDecoder()
                async for raw in pieces:
                    if not size:
                        notice.stop()
                        start = raw
                        self._stream_start(reply, raw, model)
                    waiting_for = "more"
                    size += len(raw)
                    if size > self.max_body:
                        raise self._too_large(model)
                    for payload in sse.feed(raw):
                        events += 1
                        for chunk in decoder.feed(self._event(payload, model)):
                            delivered += chunk.size
                            yield chunk
                        if decoder.done:
                            break
                    if decoder.done:
                        break
                if not decoder.done:
                    rest = sse.flush()
                    if rest is not None:
                        events += 1
                        for chunk in decoder.feed(self._event(rest, model)):
                            delivered += chunk.size
                            yield chunk
                if not events:
                    raise self._no_events(start, model)
                if not decoder.done:
                    # The body ended, but the reply had not: a server or proxy cut it short.
                    raise RetryableProviderError(
                        f"the stream from {self.server} ended before message_stop: the "
                        "reply was cut short", provider=self.name, model=model)
                await drain(pieces)
                yield decoder.last()
            except httpx.HTTPError as exc:
                raise broken_off(self._transport_error(exc, model, waiting_for),
                                 delivered) from None
            except ProviderError as exc:
                raise broken_off(exc, delivered) from None
            finally:
                await reply.aclose()
        finally:
            notice.stop()
            permit.settle(decoder.total_tokens())

    async def _acquire(self, request: ChatRequest) -> Permit:
        # Prompt text plus the most the reply may take, as the OpenAI provider reserves;
        # settle() corrects it with the usage the server reports.
        estimate = sum(estimate_tokens(m.text) for m in request.messages) + (
            request.max_tokens or 0)
        return await self._limits.acquire(self.name, request.model, estimate)

    async def _open(self, method: str, path: str, body: dict[str, Any] | None,
                    model: str | None) -> httpx.Response:
        """An open response with a 2xx status (body unread); errors mapped to provider
        errors."""
        reply = await self._send(method, path, None if body is None else orjson.dumps(body),
                                 model)
        if model is not None:
            self._observe(model, reply.status_code, reply.headers)
        if reply.status_code < 300:
            return reply
        text = await self._error_text(reply)
        raise self._http_error(model, reply.status_code, text, reply.headers)

    def _event(self, payload: str, model: str) -> dict[str, Any]:
        return stream_event(payload, server=self.server, provider=self.name, model=model,
                            scrub=self._scrub, wire="Anthropic's event format")

    def _observe(self, model: str, status: int, headers: Mapping[str, str]) -> None:
        """Hold the model's shared limiter when the server says its limit is spent."""
        wait = _reset_wait(headers)
        if status == 429:
            wait = max(wait or 0.0, parse_retry_after(headers) or 0.0) or None
        if wait:
            self._limits.limiter(self.name, model).hold(min(wait, self.retry.max_retry_after))

    # -- requests -----------------------------------------------------------------------------

    def body(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        """The Messages API request body for ``request``."""
        system = request.system_prompt
        if request.response_format == "json_object":
            system = (system + "\n\n" if system else "") + "Reply with one JSON object only."
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or self.max_tokens,
            "messages": _messages(request.messages),
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        tools = [_tool(t) for t in request.tools]
        choice = _tool_choice(request.tool_choice)
        if request.response_format == "json_schema" and request.json_schema:
            tools.append({"name": JSON_TOOL, "description": "Give the answer as this object.",
                          "input_schema": _object_schema(request.json_schema)})
            choice = {"type": "tool", "name": JSON_TOOL}
        if tools:
            body["tools"] = tools
        if choice is not None and tools:
            body["tool_choice"] = choice
        for key, value in request.params.items():
            # Dify's params with another name or no meaning here are not sent.
            if key not in ("max_completion_tokens", "presence_penalty", "frequency_penalty",
                           "seed", "n", "stream"):
                body[key] = value
        if stream:
            body["stream"] = True
        return body

    # -- replies ------------------------------------------------------------------------------

    def _response(self, request: ChatRequest, data: Any, content: bytes) -> ChatResponse:
        blocks = data.get("content") if isinstance(data, dict) else None
        if not isinstance(blocks, list):
            raise ProviderError(f"{self.server} answered without a message's content: "
                                f"{self._quote(content)}", provider=self.name,
                                model=request.model,
                                hint="check that base_url points at Anthropic's Messages API")
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "thinking":
                reasoning.append(str(block.get("thinking", "")))
            elif kind == "tool_use":
                arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
                if block.get("name") == JSON_TOOL and _wants_json(request):
                    text.append(arguments)
                else:
                    calls.append(ToolCall(str(block.get("id") or f"toolu_{len(calls)}"),
                                          str(block.get("name", "")), arguments))
        finish = _STOP.get(str(data.get("stop_reason")), "stop")
        if finish == "tool_calls" and not calls:
            finish = "stop"
        return ChatResponse("".join(text), "".join(reasoning), calls, finish,
                            _usage(data.get("usage") or {}), str(data.get("model") or ""),
                            raw=data)

    def _http_error(self, model: str | None, status: int, text: str,
                    headers: Mapping[str, str]) -> ProviderError:
        message = self._quote(text)
        try:
            error = json.loads(text).get("error") or {}
            message = self._scrub(f"{error.get('type', 'error')}: {error.get('message', '')}")
        except (json.JSONDecodeError, AttributeError):
            pass
        kwargs: dict[str, Any] = {"provider": self.name, "status": status, "model": model}
        message = f"{self.server} answered HTTP {status}: {message}"
        should_retry = headers.get("x-should-retry")
        if status in (401, 403):
            return AuthenticationError(message, hint=f"check the API key of provider "
                                                     f"{self.name!r} (ANTHROPIC_API_KEY)",
                                       **kwargs)
        if should_retry == "false":
            return ProviderError(message, hint="the server said not to retry", **kwargs)
        retry_after = parse_retry_after(headers)
        if status == 429:
            return RateLimitError(message, retry_after=retry_after or _reset_wait(headers),
                                  **kwargs)
        if status in (408, 409) or status >= 500 or should_retry == "true":
            # 529 is Anthropic's overloaded_error.
            return RetryableProviderError(message, retry_after=retry_after, **kwargs)
        if status == 404:
            return UnknownModelError(message, hint="check the model name", **kwargs)
        return ProviderError(message, hint="check the request", **kwargs)


class _StreamDecoder:
    """Turns Messages API stream events into :class:`ChatChunk` objects."""

    def __init__(self, provider: AnthropicProvider, request: ChatRequest):
        self.provider = provider
        self.request = request
        self.json_mode = _wants_json(request)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.stop_reason: str | None = None
        self.done = False
        #: Content block index -> ('text' | 'thinking' | 'json' | 'tool', tool call index).
        self.blocks: dict[int, tuple[str, int]] = {}
        self.tools = 0

    def feed(self, data: dict[str, Any]) -> list[ChatChunk]:
        kind = data.get("type")
        if kind == "message_start":
            usage = (data.get("message") or {}).get("usage") or {}
            self.prompt_tokens = _usage(usage).prompt_tokens
            self.completion_tokens = int(usage.get("output_tokens") or 0)
        elif kind == "content_block_start":
            return self._start(int(data.get("index", 0)), data.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(int(data.get("index", 0)), data.get("delta") or {})
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            usage = data.get("usage") or {}
            if usage.get("output_tokens") is not None:
                self.completion_tokens = int(usage["output_tokens"])
            if usage.get("input_tokens") is not None:
                self.prompt_tokens = _usage(usage).prompt_tokens
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = data.get("error") or {}
            message = f"{error.get('type', 'error')}: {error.get('message', '')}"
            cls = (RetryableProviderError if error.get("type") in _RETRYABLE_TYPES
                   else ProviderError)
            raise cls(f"{self.provider.server} sent a stream error: "
                      f"{self.provider._scrub(message)}",
                      provider=self.provider.name, model=self.request.model)
        # ping, content_block_stop and unknown events carry nothing to pass on.
        return []

    def _start(self, index: int, block: dict[str, Any]) -> list[ChatChunk]:
        kind = block.get("type")
        if kind == "tool_use":
            if block.get("name") == JSON_TOOL and self.json_mode:
                self.blocks[index] = ("json", -1)
                return []
            call = self.tools
            self.tools += 1
            self.blocks[index] = ("tool", call)
            # The start carries id and name; input ({}) follows as input_json_delta pieces.
            return [ChatChunk(tool_calls=[ToolCallDelta(call, str(block.get("id") or ""),
                                                        str(block.get("name") or ""))])]
        self.blocks[index] = ("thinking" if kind == "thinking" else "text", -1)
        if kind == "text" and block.get("text"):
            return [ChatChunk(text=str(block["text"]))]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[ChatChunk]:
        kind = delta.get("type")
        block, call = self.blocks.get(index, ("text", -1))
        if kind == "text_delta":
            return [ChatChunk(text=str(delta.get("text", "")))]
        if kind == "thinking_delta":
            return [ChatChunk(reasoning=str(delta.get("thinking", "")))]
        if kind == "input_json_delta":
            piece = str(delta.get("partial_json", ""))
            if block == "json":
                return [ChatChunk(text=piece)]
            return [ChatChunk(tool_calls=[ToolCallDelta(max(call, 0), arguments=piece)])]
        return []

    def total_tokens(self) -> int:
        """Tokens as reported so far, or estimated from the request (for the rate limiter)."""
        if self.prompt_tokens or self.completion_tokens:
            return self.prompt_tokens + self.completion_tokens
        return sum(estimate_tokens(m.text) for m in self.request.messages)

    def last(self) -> ChatChunk:
        finish = _STOP.get(str(self.stop_reason), "stop")
        if finish == "tool_calls" and not self.tools:
            finish = "stop"
        usage = TokenUsage(self.prompt_tokens, self.completion_tokens,
                           self.prompt_tokens + self.completion_tokens)
        return ChatChunk(usage=usage, finish_reason=finish)


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for item in out:
        # A lone text block goes as a plain string, the form most servers log and test.
        content = item["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            item["content"] = content[0]["text"]
    return out


def _blocks(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id or "",
                 "content": message.text}]
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            blocks.append({"type": "text", "text": message.content})
    else:
        for part in message.content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                blocks.append({"type": "text", "text": str(part.get("text", ""))})
            elif part.get("type") == "image_url":
                image = part.get("image_url")
                url = str(image.get("url", "")) if isinstance(image, dict) else ""
                blocks.append(_image(url))
    for call in message.tool_calls:
        try:
            arguments = call.parsed_arguments()
        except ValueError:
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name,
                       "input": arguments if isinstance(arguments, dict) else {}})
    return blocks or [{"type": "text", "text": ""}]


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function", tool)
    return {"name": function.get("name", ""), "description": function.get("description", ""),
            "input_schema": _object_schema(function.get("parameters") or {})}


def _object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # A tool's input must be an object: wrap anything else under 'value'.
    if schema.get("type") == "object" or "properties" in schema:
        return {"type": "object", **schema}
    return {"type": "object", "properties": {"value": schema}, "required": ["value"]}


def _tool_choice(choice: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        return {"type": "auto"} if choice else None
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name:
            return {"type": "tool", "name": name}
    return None


def _wants_json(request: ChatRequest) -> bool:
    return request.response_format == "json_schema" and bool(request.json_schema)


def _usage(usage: dict[str, Any]) -> TokenUsage:
    # Cached prompt tokens are reported apart from input_tokens; all of them are prompt.
    prompt = sum(int(usage.get(k) or 0) for k in
                 ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    completion = int(usage.get("output_tokens") or 0)
    return TokenUsage(prompt, completion, prompt + completion)


def _reset_wait(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds until the latest reset of a limit Anthropic reports spent
    (``anthropic-ratelimit-<kind>-remaining: 0`` with an RFC 3339 ``-reset`` time)."""
    waits = []
    for kind in _LIMIT_KINDS:
        remaining = headers.get(f"anthropic-ratelimit-{kind}-remaining")
        reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
        if remaining is None or reset is None or remaining.strip() != "0":
            continue
        try:
            when = datetime.fromisoformat(reset.strip())
        except ValueError:
            continue
        if when.tzinfo is not None:
            waits.append(when.timestamp() - (time.time() if now is None else now))
    wait = max(waits, default=0.0)
    return wait if wait > 0 else None


__all__ = ["AnthropicProvider"]
