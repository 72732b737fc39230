"""A lean OpenAI-wire chat server for benchmarks: a stand-in for a remote provider.

A remote provider's CPU is not the client's; here the server shares the machine's cores with
the client it serves, so it must cost as little as it can: a bare ``asyncio.Protocol`` (no
streams, no request log, no fault switches, no flavours) that answers each
``POST /v1/chat/completions`` after ``latency`` seconds, concurrently, over HTTP/1.1
keep-alive. The reply is what tests/integration/llm_server.py sends for a streamed request
in its ``openai`` flavour: ``echo: <last user message>`` in word-sized SSE chunks (chunked
framing, one chunk an event), a finish chunk, a usage chunk when ``stream_options`` asks,
then ``[DONE]``; a request without ``stream`` gets the whole completion as JSON.

Run: python benchmarks/_provider.py [--latency 0.05] [--port 0]; it prints its base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from typing import Any

import orjson

_PIECES = re.compile(r"\S+\s*|\s+")
_BASE = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
         "system_fingerprint": "fp_test", "service_tier": "default"}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def reply(body: dict[str, Any]) -> tuple[bytes, bytes]:
    """``(content type, body bytes)`` of the answer to one chat request."""
    messages = body.get("messages") or []
    user = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    text = f"echo: {user}"
    prompt = sum(len(_text(m).split()) for m in messages)
    completion = len(text.split())
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}
    model = body.get("model", "")
    if not body.get("stream"):
        return b"application/json", orjson.dumps({
            **_BASE, "object": "chat.completion", "model": model, "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]})
    base = {**_BASE, "model": model}
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def event(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if with_usage:
            data["usage"] = None
        return data

    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": piece}) for piece in _PIECES.findall(text)]
    events.append(event({}, "stop"))
    if with_usage:
        events.append({**base, "choices": [], "usage": usage})
    frames = [_chunk(b"data: " + orjson.dumps(e) + b"\n\n") for e in events]
    frames += [_chunk(b"data: [DONE]\n\n"), b"0\r\n\r\n"]
    return b"text/event-stream", b"".join(frames)


class _Connection(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            size = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    size = int(value)
            if len(self.buffer) < end + 4 + size:
                return
            raw = self.buffer[end + 4:end + 4 + size]
            self.buffer = self.buffer[end + 4 + size:]
            target = head.split(" ", 2)[1]
            asyncio.get_running_loop().call_later(self.latency, self._answer, target, raw)

    def _answer(self, target: str, raw: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if not target.endswith("/chat/completions"):
            self._send(404, b"application/json", b'{"error": {"message": "no route"}}')
            return
        kind, payload = reply(orjson.loads(raw))
        self._send(200, kind, payload)

    def _send(self, status: int, kind: bytes, payload: bytes) -> None:
        assert self.transport is not None
        framing = (b"Transfer-Encoding: chunked" if kind == b"text/event-stream"
                   else b"Content-Length: %d" % len(payload))
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s\r\n\r\n%s" % (
            status, b"OK" if status == 200 else b"Not Found", kind, framing, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(latency: float, port: int = 0) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(latency), "127.0.0.1", port,
                                      backlog=1024)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.latency, args.port))
    except KeyboardInterrupt:
        pass
