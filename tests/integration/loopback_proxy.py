"""Real network middlemen on 127.0.0.1 for tests, each on an event loop in its own thread:

* :func:`loopback_proxy`: an HTTP forward proxy. Plain requests arrive with an absolute URL
  and are forwarded (one request per client connection); ``CONNECT host:port`` opens a
  tunnel. Records every request line it received.
* :func:`tls_front`: a TLS terminator: accepts TLS with a certificate of the given context
  and pipes the decrypted bytes to a plain server, so any loopback HTTP server can be
  reached over https.

Every connection they open is closed when they stop (no socket outlives a test).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx


@dataclass
class Middleman:
    url: str
    port: int
    #: Request lines (proxy) or connections (TLS front) seen, in order.
    seen: list[str] = field(default_factory=list)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        sink.close()


async def _splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


@contextlib.contextmanager
def _serve(handler, tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, set]]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    tasks: set[asyncio.Task] = set()
    box: dict[str, object] = {}

    async def tracked(reader, writer):
        task = asyncio.current_task()
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    async def start() -> None:
        server = await asyncio.start_server(tracked, "127.0.0.1", 0, ssl=tls)
        box["server"] = server
        box["port"] = server.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    ready.wait(5)
    try:
        yield box["port"], tasks  # type: ignore[misc]
    finally:
        async def stop() -> None:
            box["server"].close()  # type: ignore[attr-defined]
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Closed transports finish closing on the next turns of the loop: let them, so
            # no socket is left for the garbage collector when the loop is closed.
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@contextlib.contextmanager
def loopback_proxy() -> Iterator[Middleman]:
    """An HTTP proxy (plain forwarding and CONNECT) on a free port of 127.0.0.1."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, _, rest = head.partition(b"\r\n")
        method, target, _version = line.decode("latin-1").split(" ", 2)
        seen.append(f"{method} {target}")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _splice(reader, writer, up_reader, up_writer)
            return
        headers = [h.split(b":", 1) for h in rest.split(b"\r\n") if b":" in h]
        forward = [(k.strip().decode("latin-1"), v.strip().decode("latin-1"))
                   for k, v in headers if not k.lower().startswith((b"connection", b"proxy-"))]
        length = next((int(v) for k, v in forward if k.lower() == "content-length"), 0)
        body = await reader.readexactly(length) if length else b""
        # Forwarded by httpx; the answer goes back as it arrives, ended by closing the
        # connection (one request per client connection: the client is told so).
        async with httpx.AsyncClient(trust_env=False) as client, client.stream(
                method, target, headers=forward, content=body) as response:
            writer.write(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n"
                         .encode())
            for k, v in response.headers.raw:
                if k.lower() not in (b"content-length", b"transfer-encoding", b"connection"):
                    writer.write(k + b": " + v + b"\r\n")
            writer.write(b"Connection: close\r\n\r\n")
            async for piece in response.aiter_raw():
                writer.write(piece)
                await writer.drain()

    with _serve(handle) as (port, _):
        yield Middleman(f"http://127.0.0.1:{port}", port, seen)


@contextlib.contextmanager
def tls_front(upstream_port: int, context: ssl.SSLContext) -> Iterator[Middleman]:
    """https://127.0.0.1:<port> in front of the plain server on ``upstream_port``."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append("connection")
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await _splice(reader, writer, up_reader, up_writer)

    with _serve(handle, tls=context) as (port, _):
        yield Middleman(f"https://127.0.0.1:{port}", port, seen)
