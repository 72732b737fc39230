"""AnthropicProvider: Claude models over Anthropic's native Messages API (``/v1/messages``).

The mapping from the provider interface:

* system messages become the top-level ``system`` string; the others alternate user and
  assistant (consecutive messages of one role are merged, as the API requires);
* tools are sent as ``{name, description, input_schema}``; assistant tool calls become
  ``tool_use`` blocks and ``role="tool"`` messages ``tool_result`` blocks;
* structured output (``json_schema``) is a forced tool whose input is the reply, since the
  Messages API has no response format; ``json_object`` asks for JSON in the system prompt;
* streaming reads the event stream: ``message_start`` (input tokens), ``content_block_start``
  / ``content_block_delta`` (``text_delta``, ``input_json_delta``, ``thinking_delta``),
  ``message_delta`` (stop reason, output tokens), ``ping`` and ``error`` events;
* stop reasons map to ``stop``, ``length`` and ``tool_calls``; HTTP 429, 5xx and 529
  (overloaded) raise retryable errors, keeping ``Retry-After``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .base import (
    AuthenticationError,
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    RetryableProviderError,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    UnknownModelError,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
#: The Messages API requires ``max_tokens``; this is sent when a node sets none.
DEFAULT_MAX_TOKENS = 4096
#: The forced tool that carries structured output.
JSON_TOOL = "json_output"

_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
         "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}


class AnthropicProvider:
    """Chat over Anthropic's Messages API with a pooled ``httpx.AsyncClient``."""

    def __init__(self, *, name: str = "anthropic", base_url: str | None = None,
                 api_key: str | None = None, timeout: float | httpx.Timeout | None = None,
                 max_connections: int = 100, client: httpx.AsyncClient | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS):
        self.name = name
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = self.base_url.removesuffix("/v1")
        self._api_key = api_key
        self.max_tokens = max_tokens
        self._timeout = timeout if timeout is not None else httpx.Timeout(
            connect=10.0, read=300.0, write=30.0, pool=10.0)
        self._limits = httpx.Limits(max_connections=max_connections)
        self._client = client

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r}, base_url={self.base_url!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the provider protocol -----------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatResponse:
        body = self.body(request)
        try:
            reply = await self.client.post(f"{self.base_url}/v1/messages", json=body,
                                           headers=self._headers())
        except httpx.TimeoutException as exc:
            raise self._timeout_error(request, exc) from None
        except httpx.TransportError as exc:
            raise self._transport_error(request, exc) from None
        if reply.status_code >= 400:
            raise self._http_error(request, reply.status_code, reply.text, reply.headers)
        try:
            data = reply.json()
        except json.JSONDecodeError:
            raise RetryableProviderError(
                f"the reply is not JSON: {reply.text[:200]!r}",
                provider=self.name, model=request.model, status=reply.status_code) from None
        return self._response(request, data)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body = self.body(request, stream=True)
        try:
            async with self.client.stream("POST", f"{self.base_url}/v1/messages", json=body,
                                          headers=self._headers()) as reply:
                if reply.status_code >= 400:
                    text = (await reply.aread()).decode("utf-8", "replace")
                    raise self._http_error(request, reply.status_code, text, reply.headers)
                decoder = _StreamDecoder(self, request)
                async for data in _events(reply, self, request):
                    for chunk in decoder.feed(data):
                        yield chunk
                    if decoder.done:
                        break
                if not decoder.done:
                    raise RetryableProviderError(
                        "the stream ended before message_stop", provider=self.name,
                        model=request.model)
                yield decoder.last()
        except httpx.TimeoutException as exc:
            raise self._timeout_error(request, exc) from None
        except httpx.TransportError as exc:
            raise self._transport_error(request, exc) from None

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        raise ProviderError("Anthropic's API has no embeddings", provider=self.name,
                            model=model, hint="use an OpenAI-compatible embedding model")

    async def models(self) -> list[str]:
        try:
            reply = await self.client.get(f"{self.base_url}/v1/models", headers=self._headers())
        except httpx.TransportError as exc:
            raise self._transport_error(None, exc) from None
        if reply.status_code >= 400:
            raise self._http_error(None, reply.status_code, reply.text, reply.headers)
        return [str(m["id"]) for m in reply.json().get("data", [])]

    # -- requests -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

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

    def _response(self, request: ChatRequest, data: dict[str, Any]) -> ChatResponse:
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        for block in data.get("content") or []:
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

    def _http_error(self, request: ChatRequest | None, status: int, text: str,
                    headers: httpx.Headers) -> ProviderError:
        message = text[:500]
        try:
            error = json.loads(text).get("error") or {}
            message = f"{error.get('type', 'error')}: {error.get('message', '')}"
        except (json.JSONDecodeError, AttributeError):
            pass
        kwargs: dict[str, Any] = {"provider": self.name, "status": status,
                                  "model": request.model if request else None}
        message = f"HTTP {status}: {message}"
        if status == 429:
            return RateLimitError(message, retry_after=_retry_after(headers), **kwargs)
        if status >= 500:
            return RetryableProviderError(message, retry_after=_retry_after(headers), **kwargs)
        if status in (401, 403):
            return AuthenticationError(message, hint="check ANTHROPIC_API_KEY", **kwargs)
        if status == 404:
            return UnknownModelError(message, hint="check the model name", **kwargs)
        return ProviderError(message, **kwargs)

    def _timeout_error(self, request: ChatRequest | None, exc: Exception) -> ProviderTimeout:
        return ProviderTimeout(f"timed out: {type(exc).__name__}", provider=self.name,
                               model=request.model if request else None)

    def _transport_error(self, request: ChatRequest | None,
                         exc: Exception) -> RetryableProviderError:
        return RetryableProviderError(f"connection failed: {exc or type(exc).__name__}",
                                      provider=self.name,
                                      model=request.model if request else None)


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
            cls = (RetryableProviderError if error.get("type") in
                   ("overloaded_error", "api_error", "rate_limit_error") else ProviderError)
            raise cls(f"stream error: {message}", provider=self.provider.name,
                      model=self.request.model)
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

    def last(self) -> ChatChunk:
        finish = _STOP.get(str(self.stop_reason), "stop")
        if finish == "tool_calls" and not self.tools:
            finish = "stop"
        usage = TokenUsage(self.prompt_tokens, self.completion_tokens,
                           self.prompt_tokens + self.completion_tokens)
        return ChatChunk(usage=usage, finish_reason=finish)


async def _events(reply: httpx.Response, provider: AnthropicProvider,
                  request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream (``data:`` lines, blank-line ended)."""
    data: list[str] = []
    async for line in reply.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line.strip() and data:
            payload = "\n".join(data)
            data = []
            try:
                event = json.loads(payload)
            except json.JSONDecodeError:
                raise RetryableProviderError(
                    f"malformed event in the stream: {payload[:200]!r}",
                    provider=provider.name, model=request.model) from None
            if isinstance(event, dict):
                yield event
        # 'event:' lines repeat the payload's type; ':' lines are keep-alive comments.
    if data:
        try:
            event = json.loads("\n".join(data))
        except json.JSONDecodeError:
            return
        if isinstance(event, dict):
            yield event


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
            if part.get("type") == "text":
                blocks.append({"type": "text", "text": str(part.get("text", ""))})
            elif part.get("type") == "image_url":
                url = str((part.get("image_url") or {}).get("url", ""))
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


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


__all__ = ["AnthropicProvider"]
