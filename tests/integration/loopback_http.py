"""A real HTTP server on 127.0.0.1 for tests: records every request, answers from a script.

Each request is recorded (method, path, query, headers, body). The answer is the next scripted
``(status, headers, body)`` if any, else a JSON echo of the request. ``/slow`` waits until
``release`` is set (or 5 s) before answering, for timeout tests.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class LoopbackServer:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    release: threading.Event = field(default_factory=threading.Event)

    def answer(self, status: int, body: bytes | str = b"", **headers: str) -> None:
        """Queue one scripted answer (header names with '_' for '-': Retry_After=...)."""
        data = body.encode() if isinstance(body, str) else body
        self.script.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, data))


def _handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            server.requests.append(Recorded(self.command, parts.path, parse_qs(parts.query),
                                            dict(self.headers.items()), body))
            if parts.path == "/slow":
                server.release.wait(5)
            if server.script:
                status, headers, data = server.script.popleft()
            else:
                status, headers = 200, {"Content-Type": "application/json"}
                data = json.dumps({"method": self.command, "path": parts.path}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

    return Handler


@contextmanager
def loopback_server() -> Iterator[LoopbackServer]:
    """Start a server on a free port of 127.0.0.1; stopped on exit."""
    state = LoopbackServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              name="loopback-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
