"""cellwire's HTTP/1.1 engine (the pool under FastTransport) against real servers on 127.0.0.1: keep-alive, limits, timeouts,
bodies of every framing, a connection the server closed, and proxies (plain and CONNECT+TLS)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Self

import pytest
import trustme
from loopback_proxy import loopback_proxy

from cellwire.services.http.engine import (
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    HTTPPool,
    PoolTimeout,
    ReadTimeout,
)

pytestmark = pytest.mark.timeout(30)

Handler = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """An HTTP/1.1 server whose ``handler(head, reader, writer)`` writes each response and
    says whether to keep the connection. Counts connections and requests."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler, self.tls = handler, tls
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        # Its connections too, to the end of a TLS shutdown: none may outlive the test's loop
        # (a later test's garbage collection would report it).
        for writer in list(self.writers):
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                if not await self.handler(head, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test ended with the handler waiting
        finally:
            writer.close()


def ok(body: bytes = b"hello", extra: str = "") -> Handler:
    async def handler(head: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
                     + body)
        await writer.drain()
        return True
    return handler


async def test_requests_reuse_one_kept_alive_connection_and_send_the_fixed_headers():
    async with Server(ok(b'{"a": 1}', "X-Thing: 1\r\nX-Thing: 2\r\n")) as server:
        pool = HTTPPool(server.url(), headers={"Authorization": "Bearer k"})
        for _ in range(5):
            response = await pool.request("POST", "chat/completions", b"{}",
                                          {"Content-Type": "application/json"})
            assert response.status == 200 and await response.read() == b'{"a": 1}'
            assert response.headers["x-thing"] == "1, 2"
            response.release()
        await pool.aclose()
    assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "Authorization: Bearer k" in head
    assert "Content-Length: 2\r\n" in head


async def test_at_most_the_limit_of_connections_and_waiters_get_freed_ones():
    release = asyncio.Event()

    async def slow(head, reader, writer):
        await release.wait()
        return await ok()(head, reader, writer)

    async with Server(slow) as server:
        pool = HTTPPool(server.url(), connections=3, pool=5)

        async def one() -> bytes:
            response = await pool.request("GET", "x")
            try:
                return await response.read()
            finally:
                response.release()

        tasks = [asyncio.create_task(one()) for _ in range(9)]
        await asyncio.sleep(0.2)
        release.set()
        assert await asyncio.gather(*tasks) == [b"hello"] * 9
        await pool.aclose()
    assert server.connections == 3


async def test_a_pool_kept_busy_past_its_timeout_raises_pool_timeout():
    async def never(head, reader, writer):
        await asyncio.sleep(60)
        return False

    async with Server(never) as server:
        pool = HTTPPool(server.url(), connections=1, pool=0.2, first_byte=30)
        first = asyncio.create_task(pool.request("GET", "x"))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolTimeout, match="1 connections stayed busy"):
            await pool.request("GET", "y")
        first.cancel()
        await pool.aclose()


async def test_first_byte_and_read_timeouts_say_what_was_due():
    async def stalls(head, reader, writer):
        path = head.split(b" ")[1]
        if path.endswith(b"/headers"):
            await asyncio.sleep(60)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        if path.endswith(b"/more"):
            writer.write(b"5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(60)
        return False

    async with Server(stalls) as server:
        pool = HTTPPool(server.url(), first_byte=0.2, read=0.3)
        with pytest.raises(ReadTimeout) as caught:
            await pool.request("GET", "headers")
        assert caught.value.waiting_for == "headers"
        response = await pool.request("GET", "body")
        with pytest.raises(ReadTimeout) as caught:
            await response.read()
        assert caught.value.waiting_for == "body"
        response.release()
        response = await pool.request("GET", "more")
        assert await response.next_piece() == b"hello"
        with pytest.raises(ReadTimeout, match="nothing for 0.3 s") as caught:
            await response.next_piece()
        assert caught.value.waiting_for == "more"
        response.release()
        await pool.aclose()


async def test_a_body_arrives_piece_by_piece_before_it_ends():
    step = asyncio.Event()

    async def chunks(head, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n")
        await writer.drain()
        await step.wait()
        writer.write(b"2\r\nhi\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async with Server(chunks) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("GET", "stream")
        assert await response.next_piece() == b"data: "
        assert not response.at_eof
        step.set()
        assert await response.next_piece() == b"hi"
        assert await response.next_piece() == b"" and response.at_eof
        response.release()
        await pool.aclose()


async def test_a_body_without_length_ends_with_the_connection():
    async def until_close(head, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        return False

    async with Server(until_close) as server:
        pool = HTTPPool(server.url())
        for _ in range(2):  # the second needs a new connection
            response = await pool.request("GET", "x")
            assert await response.read() == b"all of it"
            response.release()
        await pool.aclose()
    assert server.connections == 2


async def test_a_kept_alive_connection_the_server_closed_is_replaced_once():
    async def one_per_connection(head, reader, writer):
        await ok()(head, reader, writer)
        return False  # the server closes after each response, without saying so

    async with Server(one_per_connection) as server:
        pool = HTTPPool(server.url())
        for _ in range(3):
            response = await pool.request("POST", "x", b"{}")
            assert await response.read() == b"hello"
            response.release()
            await asyncio.sleep(0.05)  # the close reaches the client, or not yet
        await pool.aclose()
    assert server.connections == 3


async def test_a_response_cut_mid_body_or_malformed_is_a_lost_connection():
    async def cut(head, reader, writer):
        if b"/malformed" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        return False

    async with Server(cut) as server:
        pool = HTTPPool(server.url())
        response = await pool.request("GET", "cut")
        with pytest.raises(ConnectionLost, match="closed the connection"):
            await response.read()
        response.release()
        with pytest.raises(ConnectionLost, match="malformed"):
            await pool.request("GET", "malformed")
        await pool.aclose()


async def test_no_server_is_a_connect_error_and_a_stuck_handshake_a_connect_timeout():
    async with Server(ok()) as server:
        port = server.port
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        await HTTPPool(f"http://127.0.0.1:{port}/v1").request("GET", "x")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never answers the TLS handshake

    quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"https://127.0.0.1:{quiet.sockets[0].getsockname()[1]}/v1"
    try:
        with pytest.raises(ConnectTimeout, match="within 0.2 s"):
            await HTTPPool(url, connect=0.2).request("GET", "x")
    finally:
        quiet.close()


async def test_plain_requests_go_through_a_proxy_as_absolute_urls():
    async with Server(ok(b"via proxy")) as proxy:
        pool = HTTPPool("http://api.example.test:8000/v1", proxy=f"http://u:p%40ss@127.0.0.1:"
                                                                    f"{proxy.port}")
        response = await pool.request("GET", "models")
        assert await response.read() == b"via proxy"
        response.release()
        await pool.aclose()
    head = proxy.heads[0].decode()
    assert head.startswith("GET http://api.example.test:8000/v1/models HTTP/1.1\r\n")
    assert "Host: api.example.test:8000\r\n" in head
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'u:p@ss').decode()}" in head


async def test_https_goes_through_a_connect_tunnel_with_tls_to_the_server():
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    # The loopback proxy closes every socket it opened when it stops: no transport of this
    # test is left for a later test's garbage collection to report.
    with loopback_proxy() as proxy:
        async with Server(ok(b"secret"), tls=server_context) as server:
            pool = HTTPPool(server.url("https"), ssl_context=client_context, proxy=proxy.url)
            for _ in range(2):
                response = await pool.request("GET", "models")
                assert await response.read() == b"secret"
                response.release()
            await pool.aclose()
    assert proxy.seen == [f"CONNECT 127.0.0.1:{server.port}"]
    assert server.heads[0].startswith(b"GET /v1/models HTTP/1.1\r\n")


async def test_a_proxy_that_refuses_the_tunnel_is_a_connect_error():
    async def refuse(head, reader, writer):
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return False

    async with Server(refuse) as proxy:
        pool = HTTPPool("https://api.example.test/v1", proxy=f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(ConnectError, match="refused .* 403 Forbidden"):
            await pool.request("GET", "models")
        await pool.aclose()


async def test_a_request_cancelled_before_its_headers_frees_its_connection():
    async def first_hangs(head, reader, writer):
        if b"/hang" in head:
            await asyncio.sleep(60)
            return False
        return await ok()(head, reader, writer)

    async with Server(first_hangs) as server:
        pool = HTTPPool(server.url(), connections=1, pool=2)
        waiting = asyncio.create_task(pool.request("GET", "hang"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        response = await pool.request("GET", "next")  # the only slot is free again
        assert await response.read() == b"hello"
        response.release()
        await pool.aclose()
    assert server.connections == 2


async def test_interoperates_with_the_standard_library_server():
    # Another HTTP/1.1 implementation (http.server, threads) than this file's asyncio one.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from loopback_http import loopback_server

    with loopback_server() as server:
        server.answer(200, b'{"ok": true}', Content_Type="application/json")
        server.answer(429, b"slow down", Retry_After="3")
        pool = HTTPPool(server.url + "/v1")
        response = await pool.request("POST", "chat/completions", b'{"x": 1}',
                                      {"Content-Type": "application/json"})
        assert (response.status, await response.read()) == (200, b'{"ok": true}')
        response.release()
        response = await pool.request("GET", "models")
        assert response.status == 429 and response.headers["retry-after"] == "3"
        assert await response.read() == b"slow down"
        response.release()
        response = await pool.request("GET", "models")  # the echo
        assert await response.read() == b'{"method": "GET", "path": "/v1/models"}'
        response.release()
        await pool.aclose()
    assert [r.body for r in server.requests] == [b'{"x": 1}', b"", b""]
