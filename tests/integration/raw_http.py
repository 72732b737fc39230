"""A TCP server on 127.0.0.1 that answers HTTP requests with scripted raw bytes, for the faults
a well-behaved server never produces: no answer at all, headers and then nothing, a body that
never ends, a body that stops half-way.

Each connection reads one request head and then runs the server's ``behaviour``; it counts
connections and the body bytes it sent. The server runs an asyncio loop in a thread of its
own and is stopped (its connections with it) on exit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

Behaviour = Callable[["RawServer", asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    url: str = ""
    connections: int = 0
    #: Body bytes written so far.
    sent: int = 0


async def silent(server: RawServer, writer: asyncio.StreamWriter) -> None:
    """Read the request, never answer."""
    await asyncio.sleep(3600)


async def headers_only(server: RawServer, writer: asyncio.StreamWriter) -> None:
    """Send the headers of a 10-byte body, then nothing."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(3600)


async def half_body(server: RawServer, writer: asyncio.StreamWriter) -> None:
    """Send headers and 5 of the 10 bytes they promise, then nothing."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
                 b"12345")
    server.sent += 5
    await writer.drain()
    await asyncio.sleep(3600)


def endless(content_type: str = "text/plain") -> Behaviour:
    """A chunked body of 64 KiB pieces that goes on until the client leaves."""

    async def behaviour(server: RawServer, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        piece = b"x" * 65536
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        while not writer.is_closing():
            writer.write(frame)
            server.sent += len(piece)
            await writer.drain()

    return behaviour


@contextmanager
def raw_server(behaviour: Behaviour) -> Iterator[RawServer]:
    """Start a server on a free port of 127.0.0.1 that answers every request with
    ``behaviour``; stopped on exit."""
    state = RawServer()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await reader.readuntil(b"\r\n\r\n")
            await behaviour(state, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(connection, "127.0.0.1", 0))
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        ready.set()
        loop.run_forever()
        server.close()
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0.05))
        loop.close()

    thread = threading.Thread(target=serve, name="raw-http", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the raw HTTP server did not start")
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
