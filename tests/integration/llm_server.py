"""A test double of an OpenAI-compatible LLM server, on 127.0.0.1, for tests and benchmarks.

It is not a model: replies are made up by rules (an echo of the last user message, a JSON
value valid for the requested schema, a call of the first tool). It speaks the real wire
format over real HTTP/1.1 (keep-alive, chunked SSE streams) from an asyncio server in a
background thread, so hundreds of requests are served concurrently.

``flavour`` reproduces the documented quirks of one server (engine-peers notes §6.3):

=========  ===============================================================================
openai     usage-only last chunk with ``choices: []`` when asked; incremental tool-call
           fragments; ``system_fingerprint`` / ``service_tier``; models ``o1``/``o3``/
           ``gpt-5``/``reasoning-*`` reject ``max_tokens`` (400 ``unsupported_parameter``);
           embeddings float or base64; Bearer key required when ``api_key`` is set
ollama     ``reasoning`` field; each tool call whole in one chunk, all at ``index: 0``, with
           arguments as an object; ``stream_options`` ignored (no usage chunk);
           ``max_completion_tokens`` ignored; ``response_format`` ``json_schema`` rejected
           (as before Ollama 0.5); ``system_fingerprint: fp_ollama``
vllm       ``reasoning_content``; incremental tool calls; ``stop_reason`` and
           ``prompt_logprobs`` extra fields; usage chunk
llamacpp   ``reasoning_content``; ``timings`` on every chunk; usage on the final chunk
           together with its choice; embeddings always float; ``max_tokens`` only
lmstudio   ``reasoning_content``; tool-call fragments after the first carry ``name: ""``;
           no ``finish_reason`` at the end of a stream; rejects ``stream_options`` (older
           versions) and ``response_format`` ``json_object``; with ``leak_tool_xml`` the
           tool call arrives as ``<tool_call>`` XML inside the text
=========  ===============================================================================

Faults are queued with :meth:`LLMServer.fail` and consumed one per request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

FLAVOURS = ("openai", "ollama", "vllm", "llamacpp", "lmstudio")
_COMPLETION_TOKENS_ONLY = re.compile(r"^(o\d|gpt-5|reasoning)")
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                429: "Too Many Requests", 500: "Internal Server Error",
                503: "Service Unavailable"}


@dataclass
class Fault:
    """``status`` (answer ``status`` with ``headers``/``body``), ``slow`` (wait ``delay``
    before the headers), ``stall`` (send stream headers, then wait ``delay``), ``cut`` (stop
    the connection after ``after`` stream events), ``malformed`` (broken JSON), ``drop``
    (close the connection without answering).

    200s that are not what they claim: ``html`` (a proxy's sign-in page, ``body`` if given,
    as ``text/html``), ``truncate`` (a stream that ends cleanly after ``after`` events,
    without a ``finish_reason`` or ``[DONE]``), ``no_choices`` (JSON, or a stream, without
    ``choices``), ``huge`` (a reply of ``size`` bytes: a JSON document, or one event whose
    line never ends, written until the client leaves; :attr:`LLMServer.sent` counts it)."""

    kind: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    after: int = 1
    size: int = 0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class LLMServer:
    """The server's state and switches; every field may be changed while it runs."""

    flavour: str = "openai"
    api_key: str | None = None
    #: Seconds every request waits before answering (served concurrently).
    latency: float = 0.0
    #: The reply text: a string, or a function of the request body.
    reply: str | Callable[[dict[str, Any]], str] | None = None
    tool_arguments: dict[str, Any] = field(default_factory=lambda: {"city": "Paris"})
    #: How many tool calls a reply makes when tools are offered.
    tool_calls: int = 1
    #: Scripted tool calls instead of the rule above: a function of the request body giving
    #: ``[{"name": ..., "arguments": dict or raw JSON text}]``; an empty list answers in text.
    tool_plan: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    leak_tool_xml: bool = False
    crlf: bool = False
    keepalive: bool = False
    models: list[str] = field(default_factory=lambda: ["gpt-4o-mini", "text-embed"])
    reject_json_schema: bool | None = None
    reject_json_object: bool | None = None
    reject_stream_options: bool | None = None
    requests: list[Recorded] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    url: str = ""
    #: Requests being answered right now, and the most at once (concurrency check).
    active: int = 0
    peak: int = 0
    #: TCP connections accepted so far (connection reuse checks).
    connections: int = 0
    #: Bytes of ``huge`` replies written so far.
    sent: int = 0

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}")
        defaults = {"ollama": (True, False, False), "lmstudio": (False, True, True)}
        schema, obj, options = defaults.get(self.flavour, (False, False, False))
        self.reject_json_schema = schema if self.reject_json_schema is None else \
            self.reject_json_schema
        self.reject_json_object = obj if self.reject_json_object is None else \
            self.reject_json_object
        self.reject_stream_options = options if self.reject_stream_options is None else \
            self.reject_stream_options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def fail(self, kind: str, **options: Any) -> None:
        """Queue a fault for the next request (see :class:`Fault`)."""
        self.faults.append(Fault(kind, **options))

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/chat/completions")]

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, port: int = 0) -> LLMServer:
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", port, backlog=1024))
            self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=serve, name="llm-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the LLM test server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        self._thread.join(10)

    # -- HTTP/1.1 ----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for raw in lines:
                    name, _, value = raw.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                size = int(headers.get("content-length") or 0)
                body = await reader.readexactly(size) if size else b""
                self.active += 1
                self.peak = max(self.peak, self.active)
                try:
                    keep = await self._request(method, target, headers, body, writer)
                finally:
                    self.active -= 1
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _head(self, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def _json(self, writer: asyncio.StreamWriter, status: int, data: Any,
                    headers: dict[str, str] | None = None) -> bool:
        payload = data if isinstance(data, bytes) else json.dumps(data).encode()
        self._head(writer, status, {"Content-Type": "application/json",
                                    "Content-Length": str(len(payload)), **(headers or {})})
        writer.write(payload)
        await writer.drain()
        return True

    async def _request(self, method: str, target: str, headers: dict[str, str], raw: bytes,
                       writer: asyncio.StreamWriter) -> bool:
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return await self._json(writer, 400, {"error": {"message": "body is not JSON"}})
        path = target.split("?")[0]
        self.requests.append(Recorded(method, path, headers, body))
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            given = headers.get("authorization", "").removeprefix("Bearer ")
            # Echoes the key it got, as some servers do: the client must keep it out of errors.
            return await self._json(writer, 401, {"error": {
                "message": f"Incorrect API key provided: {given}",
                "type": "invalid_request_error", "code": "invalid_api_key"}})
        fault = self.faults.popleft() if self.faults else None
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is not None:
            if fault.kind == "drop":
                writer.transport.abort()
                return False
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
            if fault.kind == "status":
                body_out = fault.body if fault.body is not None else {"error": {
                    "message": f"injected {fault.status}", "type": "server_error"}}
                data = body_out.encode() if isinstance(body_out, str) else body_out
                return await self._json(writer, fault.status, data, fault.headers)
        if method == "GET" and path == "/v1/models":
            return await self._json(writer, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "owned_by": self.flavour} for m in self.models]})
        if method == "POST" and path == "/v1/embeddings":
            return await self._embeddings(writer, body, fault)
        if method == "POST" and path == "/v1/chat/completions":
            return await self._chat(writer, body, fault)
        return await self._json(writer, 404, {"error": {"message": f"no route {path}"}})

    # -- embeddings ----------------------------------------------------------------------

    async def _embeddings(self, writer: asyncio.StreamWriter, body: dict[str, Any],
                          fault: Fault | None) -> bool:
        if fault is not None and fault.kind == "malformed":
            return await self._json(writer, 200, b'{"data": [')
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        as_base64 = body.get("encoding_format") == "base64" and self.flavour != "llamacpp"
        data = []
        for index, text in enumerate(texts):
            vector = embedding_of(text)
            value: Any = vector
            if as_base64:
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(len(t.split()) for t in texts)
        # Out of order on purpose: clients must sort by index.
        return await self._json(writer, 200, {"object": "list", "data": data[::-1],
                                              "model": body["model"],
                                              "usage": {"prompt_tokens": tokens,
                                                        "total_tokens": tokens}})

    # -- chat ----------------------------------------------------------------------------

    def _rejection(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        model = body.get("model", "")
        if self.flavour == "openai" and _COMPLETION_TOKENS_ONLY.match(model) \
                and "max_tokens" in body:
            return 400, {"error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                           "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error", "param": "max_tokens",
                "code": "unsupported_parameter"}}
        kind = (body.get("response_format") or {}).get("type")
        if kind == "json_schema" and self.reject_json_schema:
            return 400, {"error": {"message": "invalid response_format type: json_schema",
                                   "type": "invalid_request_error"}}
        if kind == "json_object" and self.reject_json_object:
            return 400, {"error": "'response_format.type' must be 'json_schema' or 'text'"}
        if body.get("stream_options") is not None and self.reject_stream_options:
            return 400, {"error": {"message": "Unrecognized request argument supplied: "
                                              "stream_options",
                                   "type": "invalid_request_error"}}
        return None

    async def _chat(self, writer: asyncio.StreamWriter, body: dict[str, Any],
                    fault: Fault | None) -> bool:
        rejected = self._rejection(body)
        if rejected is not None:
            return await self._json(writer, *rejected)
        if fault is not None and fault.kind in ("html", "huge", "no_choices"):
            return await self._pretender(writer, body, fault)
        answer = self._answer(body)
        if body.get("stream"):
            return await self._stream(writer, body, answer, fault)
        if fault is not None and fault.kind == "malformed":
            return await self._json(writer, 200, b'{"id": "chatcmpl-1", "choices": [{')
        if fault is not None and fault.kind == "cut":
            payload = json.dumps(self._completion(body, answer)).encode()
            self._head(writer, 200, {"Content-Type": "application/json",
                                     "Content-Length": str(len(payload))})
            writer.write(payload[: len(payload) // 2])
            await writer.drain()
            writer.transport.abort()
            return False
        return await self._json(writer, 200, self._completion(body, answer))

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the "model" says: text, reasoning, tool calls, finish reason, usage."""
        messages = body.get("messages") or []
        user = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        answered_tool = any(m.get("role") == "tool" for m in messages)
        calls: list[dict[str, Any]] = []
        text = ""
        planned = self.tool_plan(body) if self.tool_plan is not None and body.get("tools") \
            else None
        if planned:
            calls = [{"id": f"call_{i}abc", "name": c["name"], "arguments": c["arguments"]}
                     for i, c in enumerate(planned)]
        elif planned is not None:
            text = self.reply(body) if callable(self.reply) else (self.reply or f"echo: {user}")
        elif body.get("tools") and body.get("tool_choice") != "none" and not answered_tool:
            for i in range(self.tool_calls):
                tool = body["tools"][i % len(body["tools"])]["function"]["name"]
                calls.append({"id": f"call_{i}abc", "name": tool,
                              "arguments": dict(self.tool_arguments, n=i)})
        elif (schema := _requested_schema(body)) is not None:
            text = json.dumps(example(schema))
        elif callable(self.reply):
            text = self.reply(body)
        elif self.reply is not None:
            text = self.reply
        else:
            text = f"echo: {user}"
        finish = "tool_calls" if calls else "stop"
        limit = body.get("max_tokens")
        if self.flavour in ("openai", "vllm") and body.get("max_completion_tokens"):
            limit = body["max_completion_tokens"]
        words = text.split(" ")
        if limit is not None and len(words) > limit:
            text, finish = " ".join(words[:limit]), "length"
        reasoning = "Let me think." if "think" in body.get("model", "") else ""
        prompt = sum(len(_text(m).split()) for m in messages)
        completion = len(text.split()) + len(reasoning.split()) + 5 * len(calls)
        if self.leak_tool_xml and calls:
            text = "".join(f"<tool_call>{json.dumps({'name': c['name'], 'arguments': c['arguments']})}"
                           "</tool_call>" for c in calls)
            calls, finish = [], "stop"
        return {"text": text, "reasoning": reasoning, "calls": calls, "finish": finish,
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}

    def _reasoning_key(self) -> str | None:
        return {"openai": None, "ollama": "reasoning"}.get(self.flavour, "reasoning_content")

    def _envelope(self, body: dict[str, Any], obj: str) -> dict[str, Any]:
        data: dict[str, Any] = {"id": "chatcmpl-test", "object": obj, "created": 1700000000,
                                "model": body.get("model", "")}
        if self.flavour == "openai":
            data.update(system_fingerprint="fp_test", service_tier="default")
        elif self.flavour == "ollama":
            data["system_fingerprint"] = "fp_ollama"
        return data

    def _completion(self, body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer["text"] or None}
        if answer["reasoning"] and self._reasoning_key():
            message[self._reasoning_key()] = answer["reasoning"]
        if answer["calls"]:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {
                    "name": c["name"],
                    "arguments": c["arguments"] if self.flavour == "ollama"
                    else _arguments_text(c["arguments"])}}
                for c in answer["calls"]]
        choice: dict[str, Any] = {"index": 0, "message": message,
                                  "finish_reason": answer["finish"]}
        if self.flavour == "vllm":
            choice["stop_reason"] = None
        data = self._envelope(body, "chat.completion")
        data.update(choices=[choice], usage=answer["usage"])
        if self.flavour == "llamacpp":
            data["timings"] = {"prompt_n": 3, "predicted_ms": 1.5}
        return data

    def _events(self, body: dict[str, Any], answer: dict[str, Any]) -> list[dict[str, Any]]:
        """The stream's chunks, as this flavour sends them."""
        usage_chunk = bool((body.get("stream_options") or {}).get("include_usage")) \
            and self.flavour != "ollama"
        base = self._envelope(body, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            if self.flavour == "vllm":
                choice["stop_reason"] = None
            data = {**base, "choices": [choice]}
            if usage_chunk and self.flavour in ("openai", "vllm"):
                data["usage"] = None
            if self.flavour == "llamacpp":
                data["timings"] = {"predicted_n": 1, "predicted_per_second": 99.5}
            return data

        events = [chunk({"role": "assistant", "content": ""})]
        key = self._reasoning_key()
        if answer["reasoning"] and key:
            events += [chunk({key: w}) for w in _pieces(answer["reasoning"])]
        events += [chunk({"content": w}) for w in _pieces(answer["text"])]
        for i, call in enumerate(answer["calls"]):
            arguments = _arguments_text(call["arguments"])
            if self.flavour == "ollama":
                events.append(chunk({"tool_calls": [{"id": call["id"], "index": 0,
                                                     "type": "function", "function": {
                    "name": call["name"], "arguments": call["arguments"]}}]}))
                continue
            events.append(chunk({"tool_calls": [{"index": i, "id": call["id"],
                                                 "type": "function", "function": {
                "name": call["name"], "arguments": ""}}]}))
            third = max(1, len(arguments) // 3)
            for start in range(0, len(arguments), third):
                fragment: dict[str, Any] = {"arguments": arguments[start:start + third]}
                if self.flavour == "lmstudio":
                    fragment["name"] = ""
                events.append(chunk({"tool_calls": [{"index": i, "function": fragment}]}))
        finish = None if self.flavour == "lmstudio" else answer["finish"]
        last = chunk({}, finish)
        if self.flavour == "llamacpp" and usage_chunk:
            last["usage"] = answer["usage"]
        events.append(last)
        if usage_chunk and self.flavour in ("openai", "vllm", "lmstudio"):
            events.append({**base, "choices": [], "usage": answer["usage"]})
        return events

    async def _pretender(self, writer: asyncio.StreamWriter, body: dict[str, Any],
                         fault: Fault) -> bool:
        """A 200 that is not the reply it claims to be."""
        if fault.kind == "html":
            page = (fault.body or "<!DOCTYPE html><html><head><title>Sign in</title></head>"
                    "<body><form>Sign in to continue</form></body></html>").encode()
            self._head(writer, 200, {"Content-Type": "text/html; charset=utf-8",
                                     "Content-Length": str(len(page))})
            writer.write(page)
            await writer.drain()
            return True
        if fault.kind == "no_choices":
            data = {**self._envelope(body, "chat.completion"), "usage": {"total_tokens": 3}}
            if not body.get("stream"):
                return await self._json(writer, 200, data)
            self._head(writer, 200, {"Content-Type": "text/event-stream",
                                     "Transfer-Encoding": "chunked"})
            frames = [f"data: {json.dumps(data)}\n\n", "data: [DONE]\n\n"]
            writer.writelines([*(_chunk(f.encode()) for f in frames), b"0\r\n\r\n"])
            await writer.drain()
            return True
        # huge: the start of a valid reply, then text that never stops.
        if body.get("stream"):
            self._head(writer, 200, {"Content-Type": "text/event-stream",
                                     "Transfer-Encoding": "chunked"})
            start = b'data: {"choices": [{"index": 0, "delta": {"content": "'
        else:
            self._head(writer, 200, {"Content-Type": "application/json",
                                     "Content-Length": str(fault.size)})
            start = b'{"choices": [{"index": 0, "message": {"content": "'
        piece = b"x" * 65536
        stream = bool(body.get("stream"))
        left = fault.size - len(start)
        writer.write(_chunk(start) if stream else start)
        try:
            while left > 0:
                data = piece[:left]
                writer.write(_chunk(data) if stream else data)
                self.sent += len(data)
                left -= len(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.transport.abort()
        return False

    async def _stream(self, writer: asyncio.StreamWriter, body: dict[str, Any],
                      answer: dict[str, Any], fault: Fault | None) -> bool:
        self._head(writer, 200, {"Content-Type": "text/event-stream",
                                 "Cache-Control": "no-cache", "Transfer-Encoding": "chunked"})
        end = "\r\n" if self.crlf else "\n"
        if fault is not None and fault.kind == "stall":
            await writer.drain()
            await asyncio.sleep(fault.delay)
        frames = [f": keep-alive{end}{end}"] if self.keepalive else []
        events = [json.dumps(e) for e in self._events(body, answer)]
        if fault is not None and fault.kind == "malformed":
            events.insert(1, '{"choices": [{"delta": {"content": "x"')
        cut = fault.after if fault is not None and fault.kind == "cut" else None
        truncate = fault is not None and fault.kind == "truncate"
        if truncate:
            assert fault is not None
            events = events[:fault.after]  # a clean end, without the finish_reason or [DONE]
        prefix = f"event: message{end}" if self.keepalive else ""
        frames += [f"{prefix}data: {event}{end}{end}" for event in events[:cut]]
        if cut is None and not truncate:
            frames.append(f"data: [DONE]{end}{end}")
        # Every event is a chunk of its own, all written at once (one system call), as a
        # server whose tokens are all ready sends them: the client still parses each event.
        out = [_chunk(frame.encode()) for frame in frames]
        if cut is None:
            out.append(b"0\r\n\r\n")
        writer.writelines(out)
        await writer.drain()
        if cut is not None:
            writer.transport.abort()
            return False
        return True


def _chunk(data: bytes) -> bytes:
    """``data`` in HTTP/1.1 chunked framing."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _pieces(text: str) -> list[str]:
    """Text in word-sized pieces that join back to exactly ``text``."""
    return re.findall(r"\S+\s*|\s+", text) if text else []


def _requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"].get("schema") or {}
    for message in body.get("messages") or []:
        text = _text(message)
        if message.get("role") == "system" and "JSON Schema:\n" in text:
            return json.loads(text.rsplit("JSON Schema:\n", 1)[1])
    if fmt.get("type") == "json_object":
        return {}
    return None


def example(schema: dict[str, Any]) -> Any:
    """A value of ``schema``'s type; properties filled recursively."""
    kind = schema.get("type", "object")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {k: example(v) for k, v in (schema.get("properties") or {}).items()}
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True,
            "array": []}.get(kind)


def embedding_of(text: str) -> list[float]:
    """A deterministic 4-vector, exact in float32."""
    return [float(len(text)), 0.5, -1.25, float(len(text.split()))]


@contextmanager
def llm_server(flavour: str = "openai", **options: Any) -> Iterator[LLMServer]:
    """A running server on a free port of 127.0.0.1; stopped on exit."""
    server = LLMServer(flavour, **options).start()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # a standalone server, e.g. for the benchmark in another process
    import argparse
    import time

    parser = argparse.ArgumentParser(description="OpenAI-compatible test-double server")
    parser.add_argument("--flavour", default="openai", choices=FLAVOURS)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    running = LLMServer(args.flavour, latency=args.latency).start(args.port)
    print(running.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        running.stop()


def _arguments_text(arguments: Any) -> str:
    """Tool-call arguments as sent: a dict as JSON, text (malformed on purpose) as it is."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
