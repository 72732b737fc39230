"""The OpenAI-compatible provider: Chat Completions, Embeddings and Models over HTTP/1.1.

One provider talks to OpenAI, Ollama (``/v1``), vLLM, llama.cpp server and LM Studio. Their
differences (engine-peers notes §6.3) are absorbed here:

* streams: a usage-only last chunk with ``choices: []``, a missing ``finish_reason`` or
  ``[DONE]``, ``reasoning`` (Ollama) or ``reasoning_content`` (vLLM, llama.cpp), unknown
  fields such as llama.cpp's ``timings``, comments, CRLF;
* tool calls: fragments merged by index; whole calls in one chunk, all at ``index: 0``
  (Ollama); an empty ``name`` after the first fragment (LM Studio); arguments as an object;
  missing ids; ``<tool_call>`` XML leaked into the text (LM Studio); ``finish_reason`` ``stop``
  although calls came;
* parameters a server rejects with HTTP 400 are adapted and the request sent again, and the
  choice is remembered per model: ``max_tokens`` <-> ``max_completion_tokens``,
  ``response_format`` ``json_schema`` -> ``json_object`` with the schema in the system prompt
  -> the prompt alone, ``stream_options`` dropped, any other named parameter dropped;
* embeddings as floats or base64.

429, 5xx, timeouts and dropped connections raise retryable errors (with ``Retry-After``) for
the node's retry policy; only a connection that could not be opened is retried here
(:class:`RetryPolicy`). Client-side rate limits come from the process-wide
:data:`RATE_LIMITS`. The API key never appears in an error message.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import struct
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from .base import (
    AuthenticationError,
    ChatAccumulator,
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ProviderError,
    RateLimitError,
    RetryableProviderError,
    TokenUsage,
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
from .ratelimit import RateLimits
from .resilience import RetryPolicy, parse_retry_after
from .sse import DONE, SSEDecoder

#: How many times one call may adapt its parameters to a server's 400 before giving up.
_MAX_ADAPTATIONS = 4
_REJECTED = re.compile(
    r"unsupported|not supported|unrecognized|unknown (?:field|param|argument|name)|"
    r"extra (?:inputs|fields)|not permitted|not allowed|must be|invalid|not available",
    re.IGNORECASE,
)
# OpenAI's reasoning models take only max_completion_tokens: start there instead of failing.
_COMPLETION_TOKENS_MODELS = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)
_TOOL_OPEN, _TOOL_CLOSE = "<tool_call>", "</tool_call>"
#: What a failed connection or read raises.
_TRANSPORT_ERRORS = httpx.HTTPError


@dataclass(slots=True)
class _ModelState:
    """What this provider learned about one model's server (kept across calls)."""

    length_key: str = "max_tokens"
    #: json_schema -> json_object (+ schema in the system prompt) -> prompt (prompt only).
    structured: str = "json_schema"
    stream_usage: bool = True
    dropped: set[str] = field(default_factory=set)


class _BadRequest(Exception):
    """A 400/422 the caller may fix by adapting the request."""

    def __init__(self, error: ProviderError, param: str | None, code: str, message: str):
        super().__init__(str(error))
        self.error, self.param, self.code, self.message = error, param, code, message


class OpenAIProvider(HTTPProvider):
    """An OpenAI-compatible server at ``base_url`` (``.../v1``), registered as ``name``.

    ``timeouts``, ``retry``, ``rpm`` / ``tpm`` / ``model_limits`` and ``rate_limits``: see
    :class:`~cellwire.services.llm.pools.HTTPProvider`. ``include_usage`` sends
    ``stream_options.include_usage`` (dropped for a model whose server rejects it);
    ``headers`` go with every request. ``client``, ``transport``, ``verify``, ``cert`` and
    ``proxy`` choose how requests travel, ``max_body`` caps a reply in bytes
    (:class:`~cellwire.services.llm.pools.HTTPProvider`).
    """

    def __init__(self, name: str = "openai", *, base_url: str = "https://api.openai.com/v1",
                 api_key: str | None = None,
                 timeouts: Timeouts | Mapping[str, float] | None = None,
                 retry: RetryPolicy | Mapping[str, Any] | None = None, rpm: float | None = None,
                 tpm: float | None = None,
                 model_limits: Mapping[str, tuple[float | None, float | None]] | None = None,
                 rate_limits: RateLimits | None = None, include_usage: bool = True,
                 max_connections: int = 512, headers: Mapping[str, str] | None = None,
                 embedding_format: str = "float", client: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 verify: bool | str | ssl.SSLContext = True,
                 cert: str | tuple[str, str] | None = None, proxy: str | None = None,
                 max_body: int = MAX_REPLY):
        self._extra_headers = dict(headers or {})
        super().__init__(name, base_url=base_url.rstrip("/"), api_key=api_key,
                         timeouts=timeouts, retry=retry, rpm=rpm, tpm=tpm,
                         model_limits=model_limits, rate_limits=rate_limits,
                         max_connections=max_connections, client=client,
                         transport=transport, verify=verify, cert=cert, proxy=proxy,
                         max_body=max_body)
        self.include_usage = include_usage
        self.embedding_format = embedding_format
        self._states: dict[str, _ModelState] = {}

    def _pool_headers(self) -> dict[str, str]:
        headers = dict(self._extra_headers)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def model_state(self, model: str) -> _ModelState:
        state = self._states.get(model)
        if state is None:
            state = self._states[model] = _ModelState()
            if "api.openai.com" in self.base_url and _COMPLETION_TOKENS_MODELS.match(model):
                state.length_key = "max_completion_tokens"
        return state

    # -- chat ----------------------------------------------------------------------------

    async def _chat_once(self, request: ChatRequest) -> ChatResponse:
        with self._late(request.model):
            response, permit = await self._start(request, stream=False)
        try:
            body = await self._read_json(response, request.model)
        except BaseException:
            permit.settle(0)
            raise
        finally:
            await response.aclose()
        decoder = _Decoder(self, request)
        accumulator = ChatAccumulator()
        choices = body.get("choices") if isinstance(body, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            permit.settle(0)
            said = "without any choice" if choice is None else "a choice without a message"
            raise ProviderError(f"{self.server} answered {said}: "
                                f"{self._quote(json.dumps(body))}", provider=self.name,
                                model=request.model,
                                hint="check that the server speaks OpenAI's Chat "
                                     "Completions format")
        as_chunk = {"choices": [{"delta": choice["message"],
                                 "finish_reason": choice.get("finish_reason")}],
                    "usage": body.get("usage")}
        for chunk in [*decoder.feed(as_chunk), *decoder.finish()]:
            accumulator.add(chunk)
        reply = accumulator.response(request.model, request.messages)
        reply.raw = body
        permit.settle(reply.usage.total_tokens)
        return reply

    async def _stream_once(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        notice = self._late(request.model).start()
        try:
            response, permit = await self._start(request, stream=True)
        except BaseException:
            notice.stop()
            raise
        decoder = _Decoder(self, request)
        sse = SSEDecoder()
        model = request.model
        pieces = body_pieces(response)
        waiting_for = "body"
        start = b""
        size = events = delivered = 0
        try:
            done = False
            async for raw in pieces:
                if not size:
                    notice.stop()
                    start = raw
                    self._stream_start(response, raw, model)
                waiting_for = "more"
                size += len(raw)
                if size > self.max_body:
                    raise self._too_large(model)
                # Every event of one read at once, merged into as few chunks as keep their
                # order: the node then streams one piece per read, not one per token.
                chunks: list[ChatChunk] = []
                for data in sse.feed(raw):
                    events += 1
                    if data == DONE or data.strip() == DONE:
                        done = True
                        break
                    chunks += decoder.feed(self._parse_event(data, model))
                for chunk in _merged(chunks):
                    delivered += chunk.size
                    yield chunk
                if done:
                    break
            if done:
                # To the end of the body, so the connection is reused (and the iterators
                # finish here rather than in the loop's finalizer).
                await drain(pieces)
            else:
                rest = sse.flush()
                if rest is not None:
                    events += 1
                    if rest.strip() == DONE:
                        done = True
                    else:
                        for chunk in decoder.feed(self._parse_event(rest, model)):
                            delivered += chunk.size
                            yield chunk
            if not events:
                raise self._no_events(start, model)
            if not decoder.choices:
                raise ProviderError(f"{self.server} sent a stream without any choice: "
                                    f"{self._quote(start)}", provider=self.name, model=model,
                                    hint="check that the server speaks OpenAI's Chat "
                                         "Completions format")
            if not done and decoder.finish_reason is None:
                # The body ended, but the reply had not: a server or proxy cut it short.
                raise RetryableProviderError(
                    f"the stream from {self.server} ended without [DONE] or a "
                    "finish_reason: the reply was cut short", provider=self.name,
                    model=model)
            for chunk in decoder.finish():
                yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise broken_off(self._transport_error(exc, model, waiting_for),
                             delivered) from None
        except ProviderError as exc:
            raise broken_off(exc, delivered) from None
        finally:
            notice.stop()
            permit.settle(decoder.total_tokens())
            await response.aclose()

    async def _start(self, request: ChatRequest, *, stream: bool):
        """Send the request, adapting it to the server's 400s; an open response and permit."""
        state = self.model_state(request.model)
        estimate = sum(estimate_tokens(m.text) for m in request.messages) + (
            request.max_tokens or 0)
        for _ in range(_MAX_ADAPTATIONS):
            payload = self.payload(request, state, stream=stream)
            permit = await self._limits.acquire(self.name, request.model, estimate)
            try:
                return await self._open("POST", "chat/completions", payload,
                                        request.model), permit
            except _BadRequest as exc:
                permit.settle(0)
                if not _adapt(state, exc, payload):
                    raise exc.error from None
            except ProviderError:
                permit.settle(0)
                raise
        raise ProviderError(f"{self.server} kept rejecting the request's parameters",
                            provider=self.name, model=request.model, status=400)

    def payload(self, request: ChatRequest, state: _ModelState | None = None, *,
                stream: bool = False) -> dict[str, Any]:
        """The JSON body of a chat request, as this model's server accepts it."""
        state = state or self.model_state(request.model)
        messages = list(request.messages)
        body: dict[str, Any] = {"model": request.model}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = list(request.stop)
        if request.max_tokens is not None:
            body[state.length_key] = request.max_tokens
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        schema = request.json_schema
        if request.response_format == "json_schema" and schema:
            if state.structured == "json_schema":
                body["response_format"] = {"type": "json_schema", "json_schema": {
                    "name": _schema_name(schema), "schema": schema}}
            else:
                if state.structured == "json_object":
                    body["response_format"] = {"type": "json_object"}
                messages = _with_schema_prompt(messages, schema)
        elif request.response_format == "json_object" and state.structured != "prompt":
            body["response_format"] = {"type": "json_object"}
        body["messages"] = [_wire_message(m) for m in messages]
        for key, value in request.params.items():
            body.setdefault(key, value)
        if stream:
            body["stream"] = True
            if self.include_usage and state.stream_usage:
                body["stream_options"] = {"include_usage": True}
        for key in state.dropped:
            body.pop(key, None)
        return body

    # -- embeddings and models -----------------------------------------------------------

    async def embed(self, model: str, texts: list[str], *, encoding_format: str | None = None,
                    dimensions: int | None = None) -> list[list[float]]:
        """One vector per text, in order; base64 answers are decoded (little-endian float32)."""
        body: dict[str, Any] = {"model": model, "input": list(texts),
                                "encoding_format": encoding_format or self.embedding_format}
        if dimensions is not None:
            body["dimensions"] = dimensions

        permit = await self._limits.acquire(self.name, model, sum(map(estimate_tokens, texts)))
        try:
            response = await self._open("POST", "embeddings", body, model)
        except _BadRequest as exc:
            raise exc.error from None
        finally:
            permit.settle(sum(map(estimate_tokens, texts)))
        try:
            data = await self._read_json(response, model)
        finally:
            await response.aclose()
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != len(texts):
            raise ProviderError(
                f"{self.server} returned {len(items) if isinstance(items, list) else 'no'} "
                f"embeddings for {len(texts)} inputs", provider=self.name, model=model)
        items = sorted(items, key=lambda item: item.get("index", 0))
        return [self._vector(item.get("embedding"), model) for item in items]

    def _vector(self, value: Any, model: str) -> list[float]:
        if isinstance(value, str):
            try:
                raw = base64.b64decode(value, validate=True)
            except ValueError as exc:
                raise ProviderError(f"{self.server} sent an embedding that is neither a list "
                                    f"nor base64: {exc}", provider=self.name,
                                    model=model) from None
            if len(raw) % 4:
                raise ProviderError(f"{self.server} sent a base64 embedding of {len(raw)} "
                                    "bytes, not whole 32-bit floats", provider=self.name,
                                    model=model)
            # struct, not numpy: a run that never embeds should not pay numpy's import.
            return list(struct.unpack(f"<{len(raw) // 4}f", raw))
        if isinstance(value, list) and value and isinstance(value[0], list):
            value = value[0]  # llama.cpp may nest one vector per input token group
        if isinstance(value, list):
            return [float(x) for x in value]
        raise ProviderError(f"{self.server} sent an embedding of type {type(value).__name__}",
                            provider=self.name, model=model)

    async def rerank(self, model: str, query: str, documents: list[str], *,
                     top_n: int | None = None) -> list[tuple[int, float]]:
        """``POST /rerank`` (Cohere's, Jina's and vLLM's wire format): each document's
        relevance to ``query`` as ``(index into documents, score)``, best first; at most
        ``top_n`` when given."""
        body: dict[str, Any] = {"model": model, "query": query, "documents": list(documents)}
        if top_n is not None:
            body["top_n"] = top_n
        tokens = estimate_tokens(query) * len(documents) + sum(map(estimate_tokens, documents))
        permit = await self._limits.acquire(self.name, model, tokens)
        try:
            response = await self._open("POST", "rerank", body, model)
        except _BadRequest as exc:
            raise exc.error from None
        finally:
            permit.settle(tokens)
        try:
            data = await self._read_json(response, model)
        finally:
            await response.aclose()
        # Cohere, Jina and vLLM answer {"results": [...]}; Hugging Face TEI a bare list.
        items = data.get("results", data.get("data")) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ProviderError(f"{self.server} sent a rerank reply without results: "
                                f"{self._quote(json.dumps(data)[:200])}", provider=self.name,
                                model=model)
        ranked: list[tuple[int, float]] = []
        for item in items:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get("relevance_score", item.get("score")) \
                if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < len(documents) or \
                    not isinstance(score, (int, float)):
                raise ProviderError(f"{self.server} sent a rerank result that is not "
                                    f"{{index < {len(documents)}, relevance_score}}: "
                                    f"{self._quote(json.dumps(item)[:200])}",
                                    provider=self.name, model=model)
            ranked.append((index, float(score)))
        ranked.sort(key=lambda pair: -pair[1])
        return ranked[:top_n] if top_n is not None else ranked

    async def models(self) -> list[str]:
        """``GET /models``: the model ids the server lists."""
        try:
            response = await self._open("GET", "models", None, None)
        except _BadRequest as exc:
            raise exc.error from None
        try:
            data = await self._read_json(response, None)
        finally:
            await response.aclose()
        items = (data.get("data") or data.get("models") or []) if isinstance(data, dict) else []
        return [str(m.get("id") or m.get("name")) for m in items if isinstance(m, dict)]

    # -- HTTP --------------------------------------------------------------------------

    async def _open(self, method: str, path: str, payload: Any, model: str | None
                    ) -> httpx.Response:
        """An open response with a 2xx status (body unread); errors mapped to provider
        errors."""
        body = None if payload is None else orjson.dumps(payload)
        response = await self._send(method, path, body, model)
        if response.status_code < 300:
            return response
        text = await self._error_text(response)
        raise self._status_error(response.status_code, response.headers, text, model)

    async def _read_json(self, response: httpx.Response, model: str | None) -> Any:
        return self._json_reply(response, await self._read_reply(response, model), model)

    def _parse_event(self, data: str, model: str) -> dict[str, Any]:
        event = stream_event(data, server=self.server, provider=self.name, model=model,
                             scrub=self._scrub, wire="OpenAI's SSE format")
        error = event.get("error")
        if error:
            message = self._scrub(_error_message(error))
            kind = str(error.get("type", "")) if isinstance(error, dict) else ""
            cls = RetryableProviderError if re.search(
                r"server|overload|unavailable|timeout", kind + " " + message, re.IGNORECASE
            ) else ProviderError
            raise cls(f"{self.server} reported an error in its stream: {message}",
                      provider=self.name, model=model)
        return event

    def _status_error(self, status: int, headers: Mapping[str, str], text: str,
                      model: str | None) -> Exception:
        error: Any = None
        try:
            error = json.loads(text).get("error") if text else None
        except (json.JSONDecodeError, AttributeError):
            pass
        message = self._scrub(_error_message(error)) if error else self._quote(text)
        code = str(error.get("code") or "") if isinstance(error, dict) else ""
        param = error.get("param") if isinstance(error, dict) else None
        said = f"{self.server} answered HTTP {status}: {message or '(no message)'}"
        where: dict[str, Any] = {"provider": self.name, "model": model, "status": status}
        if status in (401, 403):
            return AuthenticationError(
                said, hint=f"check the API key of provider {self.name!r} "
                           "(e.g. OPENAI_API_KEY) and its access to the model", **where)
        if status == 429 and code != "insufficient_quota":
            return RateLimitError(said, retry_after=parse_retry_after(headers), **where)
        if status in (408, 409, 425) or status >= 500:
            return RetryableProviderError(said, retry_after=parse_retry_after(headers), **where)
        if status == 404 and model and "model" in message.lower():
            return UnknownModelError(said, hint=f"list the server's models with "
                                                f"{self.name!r}.models()", **where)
        if status in (400, 422):
            return _BadRequest(ProviderError(said, **where), param if isinstance(
                param, str) else None, code, message)
        return ProviderError(said, hint="check base_url and the request", **where)


# -- adapting requests to what a server accepts --------------------------------------------


def _adapt(state: _ModelState, exc: _BadRequest, payload: Mapping[str, Any]) -> bool:
    """Change ``state`` so the next request avoids what the server rejected; False if not."""
    message = exc.message
    if not (exc.code in ("unsupported_parameter", "unsupported_value")
            or _REJECTED.search(message)):
        return False
    param = exc.param if exc.param in payload or exc.param == "response_format.type" else None
    if param is None:
        mentioned = [(message.find(key), key) for key in payload if key not in (
            "model", "messages", "stream") and message.find(key) >= 0]
        param = min(mentioned)[1] if mentioned else None
    if param is None and "json_schema" in message and "response_format" in payload:
        param = "response_format"
    if param is None:
        return False
    param = param.split(".")[0].split("[")[0]
    if param in ("max_tokens", "max_completion_tokens"):
        if state.length_key != param:
            return False
        state.length_key = "max_completion_tokens" if param == "max_tokens" else "max_tokens"
        return True
    if param == "response_format":
        step = {"json_schema": "json_object", "json_object": "prompt"}.get(state.structured)
        if step is None:
            return False
        state.structured = step
        return True
    if param == "stream_options":
        if not state.stream_usage:
            return False
        state.stream_usage = False
        return True
    if param in payload and param not in state.dropped:
        state.dropped.add(param)
        return True
    return False


def _schema_name(schema: Mapping[str, Any]) -> str:
    # OpenAI allows [a-zA-Z0-9_-]{1,64} here.
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "output"))
    return name[:64] or "output"


def _with_schema_prompt(messages: list[ChatMessage], schema: Mapping[str, Any]
                        ) -> list[ChatMessage]:
    instruction = ("Reply with one JSON object only, without prose or code fences, that is "
                   "valid for this JSON Schema:\n" + json.dumps(schema, ensure_ascii=False))
    if messages and messages[0].role == "system" and isinstance(messages[0].content, str):
        first = messages[0]
        return [ChatMessage("system", f"{first.content}\n\n{instruction}"), *messages[1:]]
    return [ChatMessage("system", instruction), *messages]


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": c.arguments or "{}"}}
            for c in message.tool_calls
        ]
        if not message.content:
            data["content"] = None
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    if message.name:
        data["name"] = message.name
    return data


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error)


# -- decoding chunks -----------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    index: int
    id: str
    name: str = ""
    arguments: str = ""


class _Decoder:
    """Turns completion chunks (or a whole message) of any server into :class:`ChatChunk`."""

    def __init__(self, provider: OpenAIProvider, request: ChatRequest):
        self._provider = provider
        self._request = request
        self._slots: dict[int, _Slot] = {}  # the server's index -> our slot
        self._calls = 0
        self._finish: str | None = None
        self._usage: TokenUsage | None = None
        self._chars = 0
        self._tags = _ToolTagFilter() if request.tools else None
        #: Choices seen: a stream that carried none said nothing.
        self.choices = 0

    @property
    def finish_reason(self) -> str | None:
        """The finish reason the server sent, if it sent one."""
        return self._finish

    def feed(self, event: Mapping[str, Any]) -> list[ChatChunk]:
        chunks: list[ChatChunk] = []
        # Never choices[0] blindly: usage-only and Azure filter chunks have no choices.
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self.choices += 1
            delta = choice.get("delta") or choice.get("message") or {}
            text = delta.get("content")
            if isinstance(text, list):
                text = "".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
            if not isinstance(text, str):
                text = ""
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if not isinstance(reasoning, str):
                reasoning = ""
            raw_calls = delta.get("tool_calls")
            calls = [self._call(call, position) for position, call in enumerate(raw_calls)
                     if isinstance(call, dict)] if raw_calls else []
            if self._tags is not None and text:
                text, bodies = self._tags.feed(text)
                calls.extend(self._tagged(bodies))
            finish = choice.get("finish_reason")
            if finish:
                finish = self._finish = str(finish)
            self._chars += len(text) + len(reasoning)
            if calls:
                self._chars += sum(len(d.arguments) for d in calls)
            chunks.append(ChatChunk(text, reasoning, calls, None, finish or None))
        usage = event.get("usage")
        if isinstance(usage, dict):
            self._usage = _usage(usage)
            if chunks:
                chunks[-1].usage = self._usage
            else:
                chunks.append(ChatChunk(usage=self._usage))
        return [c for c in chunks if c.text or c.reasoning or c.tool_calls or c.usage
                or c.finish_reason]

    def finish(self) -> list[ChatChunk]:
        """Chunks owed at the end: text held back by the tag filter, the inferred finish."""
        chunk = ChatChunk()
        if self._tags is not None:
            chunk.text = self._tags.flush()
        if self._slots and self._finish in (None, "stop"):
            chunk.finish_reason = "tool_calls"
        return [chunk] if chunk.text or chunk.finish_reason else []

    def total_tokens(self) -> int:
        """Real usage when the server sent it, else an estimate (for the rate limiter)."""
        if self._usage is not None:
            return self._usage.total_tokens
        prompt = sum(estimate_tokens(m.text) for m in self._request.messages)
        return prompt + (self._chars + 3) // 4

    def _call(self, call: Mapping[str, Any], position: int) -> ToolCallDelta:
        raw = call.get("index", position)
        raw_index = raw if isinstance(raw, int) else position
        function = call.get("function") or {}
        call_id = call.get("id") or None
        name = function.get("name") or None
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):
            arguments = json.dumps(arguments, ensure_ascii=False)
        elif arguments is None:
            arguments = ""
        slot = self._slots.get(raw_index)
        # Ollama sends each whole call in one chunk, every one at index 0: a fragment that
        # starts another call (new id, or a new name after complete arguments) gets a new slot.
        if slot is not None and (
            (call_id and call_id != slot.id)
            or (name and not call_id and slot.name and _complete_json(slot.arguments))
        ):
            slot = None
        if slot is None:
            slot = _Slot(self._calls, call_id or f"call_{uuid.uuid4().hex[:24]}")
            self._calls += 1
            self._slots[raw_index] = slot
        slot.name = slot.name or name or ""
        slot.arguments += arguments
        return ToolCallDelta(slot.index, slot.id, name, arguments)

    def _tagged(self, bodies: list[str]) -> list[ToolCallDelta]:
        deltas = []
        for body in bodies:
            try:
                data = json.loads(body)
                name = str(data["name"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
            arguments = data.get("arguments", data.get("parameters", {}))
            deltas.append(self._call({"id": None, "index": 1000 + self._calls, "function": {
                "name": name, "arguments": arguments}}, 0))
        return deltas


def _merged(chunks: list[ChatChunk]) -> list[ChatChunk]:
    """Chunks of one network read joined where that keeps every piece in order: text after
    text or reasoning, reasoning after reasoning, usage and finish reason onto the piece
    before them. Tool-call fragments stay as they are."""
    if len(chunks) < 2:
        return chunks
    out = [chunks[0]]
    for chunk in chunks[1:]:
        last = out[-1]
        if (last.tool_calls or chunk.tool_calls or last.usage is not None
                or last.finish_reason or (chunk.reasoning and last.text)):
            out.append(chunk)
            continue
        last.text += chunk.text
        last.reasoning += chunk.reasoning
        last.usage = chunk.usage
        last.finish_reason = chunk.finish_reason
    return out


def _complete_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _usage(data: Mapping[str, Any]) -> TokenUsage:
    prompt = int(data.get("prompt_tokens") or 0)
    completion = int(data.get("completion_tokens") or 0)
    total = int(data.get("total_tokens") or prompt + completion)
    return TokenUsage(prompt, completion, total)


class _ToolTagFilter:
    """Pulls ``<tool_call>{json}</tool_call>`` blocks some LM Studio models leak into the
    text out of a stream, holding back text that may be the start of such a tag."""

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False

    def feed(self, text: str) -> tuple[str, list[str]]:
        self._buffer += text
        out: list[str] = []
        bodies: list[str] = []
        while True:
            if not self._inside:
                at = self._buffer.find(_TOOL_OPEN)
                if at < 0:
                    keep = _partial_tag(self._buffer)
                    out.append(self._buffer[:len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep:]
                    break
                out.append(self._buffer[:at])
                self._buffer = self._buffer[at + len(_TOOL_OPEN):]
                self._inside = True
            else:
                end = self._buffer.find(_TOOL_CLOSE)
                if end < 0:
                    break
                bodies.append(self._buffer[:end].strip())
                self._buffer = self._buffer[end + len(_TOOL_CLOSE):]
                self._inside = False
        return "".join(out), bodies

    def flush(self) -> str:
        text = (_TOOL_OPEN if self._inside else "") + self._buffer
        self._buffer, self._inside = "", False
        return text


def _partial_tag(text: str) -> int:
    """How many trailing characters of ``text`` could begin ``<tool_call>``."""
    for size in range(min(len(text), len(_TOOL_OPEN) - 1), 0, -1):
        if _TOOL_OPEN.startswith(text[-size:]):
            return size
    return 0
