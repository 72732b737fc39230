"""A test double of Anthropic's Messages API on 127.0.0.1, speaking its real wire format.

``POST /v1/messages`` answers with the next scripted reply (:meth:`AnthropicServer.reply`),
else echoes the last user message. With ``"stream": true`` it sends the event stream as
Anthropic does: ``message_start``, ``ping``, ``content_block_start`` /
``content_block_delta`` (``text_delta``, ``input_json_delta``, ``thinking_delta``) /
``content_block_stop``, ``message_delta`` (stop reason and usage) and ``message_stop``.
Faults are queued with :meth:`AnthropicServer.fault`, one per request: an HTTP error
(429 with ``retry-after``, 529 ``overloaded_error``, 500 ...), extra response headers
(``anthropic-ratelimit-*``), an ``error`` event mid-stream, a stream cut after some events
(cleanly, or by resetting the connection), malformed JSON, a slow first byte, a stream that
stalls after its headers, or a connection dropped without an answer. Input tokens are the words of the system
prompt and messages; output tokens the words of the reply, so tests can check usage.
``GET /v1/models`` lists :attr:`AnthropicServer.models`.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class AnthropicServer:
    url: str
    api_key: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    replies: deque[dict[str, Any]] = field(default_factory=deque)
    faults: deque[dict[str, Any]] = field(default_factory=deque)
    models: list[str] = field(default_factory=lambda: ["claude-3-5-haiku-20241022"])
    #: Bytes of ``huge`` replies written so far.
    sent: int = 0

    def reply(self, text: str = "", *, tools: list[dict[str, Any]] | None = None,
              thinking: str = "", stop_reason: str | None = None) -> None:
        """Queue a reply: text, ``tool_use`` blocks (``{name, input}``) and thinking."""
        self.replies.append({"text": text, "tools": tools or [], "thinking": thinking,
                             "stop_reason": stop_reason})

    def fault(self, status: int | None = None, *, error: str | None = None,
              cut_after: int | None = None, reset: bool = False, malformed: bool = False,
              slow: float = 0.0, stall: float = 0.0, drop: bool = False,
              html: str | None = None, no_content: bool = False, huge: int = 0,
              **headers: str) -> None:
        """Queue a fault for the next request: an HTTP ``status`` (with an error body and
        ``headers``, '_' for '-'; without a status the headers go on a normal answer), an
        ``error`` event of that type mid-stream, a stream cut after ``cut_after`` events
        (``reset``: the connection is reset, not closed), ``malformed`` JSON, ``slow``
        seconds before the headers, ``stall`` seconds after a stream's headers, or ``drop``
        (the connection closed without an answer). 200s that are not what they claim:
        ``html`` (that page, as ``text/html``), ``no_content`` (a message without
        ``content``), ``huge`` (a reply of that many bytes, written until the client
        leaves; :attr:`sent` counts them)."""
        self.faults.append({"status": status, "error": error, "cut_after": cut_after,
                            "reset": reset, "malformed": malformed, "slow": slow,
                            "stall": stall, "drop": drop, "html": html,
                            "no_content": no_content, "huge": huge,
                            "headers": {k.replace("_", "-"): v for k, v in headers.items()}})

    def last_user_content(self) -> Any:
        """The ``content`` of the last user message of the last request, as sent."""
        messages = [m for m in self.requests[-1]["messages"] if m["role"] == "user"]
        return messages[-1]["content"]


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v.get("text", "") if isinstance(v, dict) else v) for v in value)
    return 0


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "".join(b.get("text", "") for b in content if b.get("type") == "text")
    return ""


def _plan(server: AnthropicServer, body: dict[str, Any]) -> dict[str, Any]:
    if server.replies:
        return server.replies.popleft()
    return {"text": f"echo: {_last_user_text(body)}", "tools": [], "thinking": "",
            "stop_reason": None}


def _blocks(plan: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if plan["thinking"]:
        blocks.append({"type": "thinking", "thinking": plan["thinking"], "signature": "sig"})
    if plan["text"]:
        blocks.append({"type": "text", "text": plan["text"]})
    for i, tool in enumerate(plan["tools"]):
        blocks.append({"type": "tool_use", "id": tool.get("id", f"toolu_{i:02d}"),
                       "name": tool["name"], "input": tool.get("input", {})})
    return blocks


def _usage(body: dict[str, Any], plan: dict[str, Any]) -> tuple[int, int]:
    prompt = _words(body.get("system", "")) + sum(_words(m.get("content"))
                                                  for m in body.get("messages", []))
    completion = _words(plan["text"]) + _words(plan["thinking"]) + sum(
        len(json.dumps(t.get("input", {})).split()) for t in plan["tools"])
    return prompt, completion


def _stop_reason(plan: dict[str, Any]) -> str:
    return plan["stop_reason"] or ("tool_use" if plan["tools"] else "end_turn")


def _events(body: dict[str, Any], plan: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    prompt, completion = _usage(body, plan)
    message = {"id": "msg_test", "type": "message", "role": "assistant", "model": body["model"],
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": prompt, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(_blocks(plan)):
        kind = block["type"]
        start = dict(block)
        if kind == "text":
            start["text"] = ""
            words = block["text"].split(" ")
            deltas = [{"type": "text_delta", "text": w + (" " if i < len(words) - 1 else "")}
                      for i, w in enumerate(words)]
        elif kind == "thinking":
            start["thinking"] = ""
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
        else:
            start["input"] = {}
            text = json.dumps(block["input"])
            half = len(text) // 2
            deltas = [{"type": "input_json_delta", "partial_json": text[:half]},
                      {"type": "input_json_delta", "partial_json": text[half:]}]
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": start}))
        events.extend(("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": d}) for d in deltas)
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": _stop_reason(plan),
                                               "stop_sequence": None},
                                     "usage": {"output_tokens": completion}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _handler(server: AnthropicServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None):
            self._send_raw(status, json.dumps(data).encode(), headers or {})

        def do_GET(self) -> None:
            if self.path.startswith("/v1/models"):
                self._send_json(200, {"data": [{"id": m, "type": "model"}
                                               for m in server.models]})
            else:
                self._send_json(404, {"type": "error", "error": {
                    "type": "not_found_error", "message": self.path}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server.requests.append(body)
            server.headers.append({k.lower(): v for k, v in self.headers.items()})
            if server.api_key and self.headers.get("x-api-key") != server.api_key:
                self._send_json(401, {"type": "error", "error": {
                    "type": "authentication_error", "message": "invalid x-api-key"}})
                return
            fault = server.faults.popleft() if server.faults else None
            extra = fault["headers"] if fault else {}
            if fault and fault["drop"]:
                self._abort()
                return
            if fault and fault["slow"]:
                time.sleep(fault["slow"])
            if fault and fault["status"]:
                kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(
                    fault["status"], "api_error" if fault["status"] >= 500
                    else "invalid_request_error")
                self._send_json(fault["status"], {"type": "error", "error": {
                    "type": kind, "message": f"scripted {fault['status']}"}}, extra)
                return
            if fault and fault["html"] is not None:
                page = fault["html"].encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            if fault and fault["huge"]:
                self._huge(fault["huge"], bool(body.get("stream")))
                return
            if fault and fault["no_content"]:
                self._send_json(200, {"id": "msg_test", "type": "message", "role": "assistant",
                                      "model": body["model"], "stop_reason": "end_turn"})
                return
            plan = _plan(server, body)
            if not body.get("stream"):
                if fault and fault["malformed"]:
                    self._send_raw(200, b'{"id": "msg_test", "content": [', extra)
                    return
                prompt, completion = _usage(body, plan)
                self._send_json(200, {
                    "id": "msg_test", "type": "message", "role": "assistant",
                    "model": body["model"], "content": _blocks(plan),
                    "stop_reason": _stop_reason(plan), "stop_sequence": None,
                    "usage": {"input_tokens": prompt, "output_tokens": completion}}, extra)
                return
            self._stream(body, plan, fault, extra)

        def _send_raw(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _huge(self, size: int, stream: bool) -> None:
            """The start of a valid reply, then text that never stops, ``size`` bytes in all."""
            self.send_response(200)
            if stream:
                self.send_header("Content-Type", "text/event-stream")
                start = (b'event: content_block_delta\ndata: {"type": "content_block_delta", '
                         b'"index": 0, "delta": {"type": "text_delta", "text": "')
            else:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(size))
                start = b'{"type": "message", "content": [{"type": "text", "text": "'
            self.end_headers()
            piece = b"x" * 65536
            left = size - len(start)
            try:
                self.wfile.write(start)
                while left > 0:
                    data = piece[:left]
                    self.wfile.write(data)
                    server.sent += len(data)
                    left -= len(data)
            except OSError:
                pass  # the client gave up, as it should
            self.close_connection = True

        def _abort(self) -> None:
            # SO_LINGER 0: close() sends a reset, as a crashed server or a proxy would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            # Closed here, before the server's own shutdown() could send a polite FIN.
            self.wfile.close()
            self.rfile.close()
            self.connection.close()
            self.close_connection = True

        def _stream(self, body: dict[str, Any], plan: dict[str, Any],
                    fault: dict[str, Any] | None, headers: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.flush()
            if fault and fault["stall"]:
                time.sleep(fault["stall"])
            lines = [f"event: {name}\ndata: {json.dumps(data)}\n\n"
                     for name, data in _events(body, plan)]
            if fault and fault["error"]:
                lines = [*lines[:3], "event: error\ndata: " + json.dumps({
                    "type": "error", "error": {"type": fault["error"],
                                               "message": "scripted stream error"}}) + "\n\n"]
            if fault and fault["malformed"]:
                lines.insert(3, 'event: content_block_delta\ndata: {"type": "content_blo\n\n')
            if fault and fault["cut_after"] is not None:
                lines = lines[: fault["cut_after"]]
            try:
                for line in lines:
                    self.wfile.write(line.encode())
                    self.wfile.flush()
            except OSError:
                pass  # the client gave up
            if fault and fault["reset"]:
                self._abort()
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left is part of the tests, not a server error


@contextmanager
def anthropic_server(api_key: str | None = None) -> Iterator[AnthropicServer]:
    """Start the double on a free port of 127.0.0.1; stopped on exit."""
    state = AnthropicServer(url="", api_key=api_key)
    httpd = _Server(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
