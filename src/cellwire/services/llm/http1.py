"""A lean HTTP/1.1 client for many concurrent requests to one server: asyncio + httptools.

Why not aiohttp or httpx: at 200 concurrent streams aiohttp costs the client about 220 us of
CPU per request (httpx about 4 ms), this about 90 us (benchmarks/llm_parallel.py), and a
fan-out of LLM nodes has no room for the difference. It does only what the LLM providers
need: keep-alive connections to one origin (http or https, directly or through an
HTTP proxy), requests with a bytes body, responses read whole or piece by piece as they
arrive, and four timeouts. Parsing is httptools' (llhttp, as in Node.js and uvicorn).

Timeouts cost one timer per request: it fires after ``first_byte`` (or ``read`` once the
body has started) and re-arms itself while data keeps coming, instead of being moved on
every read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import httptools

#: How long an idle connection is kept for reuse.
KEEPALIVE_SECONDS = 30.0


class HTTPError(OSError):
    """The request could not be carried out: no connection, or the connection dropped."""


class ConnectError(HTTPError):
    """No connection could be opened to the server (or its proxy); ``reason`` says why,
    without the address."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class ConnectionLost(HTTPError):
    """The server closed the connection before the response was complete."""


class ConnectTimeout(TimeoutError):
    """Connecting took longer than the ``connect`` timeout."""


class PoolTimeout(TimeoutError):
    """Every connection stayed busy for longer than the ``pool`` timeout."""


class ReadTimeout(TimeoutError):
    """The server sent nothing for longer than the ``first_byte`` or ``read`` timeout.
    ``waiting_for`` says what was due: ``"headers"``, ``"body"`` (its first byte) or
    ``"more"`` (the rest of a started body)."""

    def __init__(self, message: str, waiting_for: str) -> None:
        super().__init__(message)
        self.waiting_for = waiting_for


class Response:
    """A response whose headers have arrived; the body is read with :meth:`read` or, as it
    arrives, :meth:`next_piece`. ``release()`` must follow (it returns the connection to the pool)."""

    __slots__ = ("_complete", "_connection", "_error", "_pieces", "_released", "_waiter",
                 "headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        #: Header names in lower case; repeated headers joined by ", ".
        self.headers: dict[str, str] = {}
        self._connection = connection
        self._pieces: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._released = False

    @property
    def at_eof(self) -> bool:
        """The whole body has arrived and been read."""
        return self._complete and not self._pieces

    async def next_piece(self) -> bytes:
        """What arrived since the last call, at least one byte; ``b""`` at the end."""
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            await self._wait()
        pieces = self._pieces
        self._pieces = []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def read(self) -> bytes:
        """The whole (remaining) body."""
        parts = []
        while piece := await self.next_piece():
            parts.append(piece)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the response: its connection is reused when the body was read to the
        end and the server keeps it alive, else closed."""
        if not self._released:
            self._released = True
            self._connection.finish(self)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self, pool: HTTPPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.headers_waiter: asyncio.Future[Response] | None = None
        self.idle_since = 0.0
        self.closed = False
        self.received = False
        self.keep_alive = False
        #: Raw bytes while a CONNECT tunnel is being set up (no parser then).
        self.tunnel: bytearray | None = None
        self.tunnel_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._body_started = False
        self._until_eof = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel += data
            if b"\r\n\r\n" in self.tunnel and self.tunnel_waiter is not None \
                    and not self.tunnel_waiter.done():
                self.tunnel_waiter.set_result(None)
            return
        if self.closed:
            return  # closed by the client: what was still on the way is of no use
        if self.response is None:
            self._close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self.received = True
        self._last = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"the server sent a malformed response: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.tunnel_waiter is not None and not self.tunnel_waiter.done():
            self.tunnel_waiter.set_exception(ConnectionLost("the proxy closed the connection"))
        response = self.response
        if response is not None and not response._complete:
            if self._until_eof and response.status:
                self.on_message_complete()  # a body without a length ends with the connection
            else:
                self._fail(ConnectionLost(
                    "the server closed the connection" + (f": {exc}" if exc else "")))
        self.pool._forget(self)

    # -- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.response.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        if response.status < 200:
            return  # 1xx: the real response follows
        headers = response.headers
        self._until_eof = ("content-length" not in headers
                           and "chunked" not in headers.get("transfer-encoding", "")
                           and response.status not in (204, 304) and response.status >= 200)
        waiter = self.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        self._body_started = True
        response._pieces.append(body)
        response._wake()

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        if response.status < 200:  # 1xx: the real response follows on the same connection
            response.headers = {}
            return
        self._stop_timer()
        # Asked now: the parser forgets the message's headers once it is complete.
        self.keep_alive = self.parser.should_keep_alive()
        response._complete = True
        response._wake()

    # -- requests ----------------------------------------------------------------------

    async def send(self, head: bytes, body: bytes | None) -> Response:
        """Write a request; the response once its headers arrive."""
        loop = self.pool.loop
        self.response = Response(self)
        self.received = self.keep_alive = self._body_started = self._until_eof = False
        self.headers_waiter = loop.create_future()
        self._last = loop.time()
        self._timer = loop.call_at(self._last + self.pool.first_byte, self._check_time)
        assert self.transport is not None
        self.transport.write(head + body if body else head)
        return await self.headers_waiter

    def finish(self, response: Response) -> None:
        """The caller is done with ``response``."""
        if response is not self.response:
            return
        self.response = None
        self._stop_timer()
        if response._complete and response._error is None and not self.closed \
                and self.keep_alive:
            self.parser = httptools.HttpResponseParser(self)
            self.pool._put_back(self)
        else:
            self._close()

    def _check_time(self) -> None:
        limit = self.pool.read if self._body_started else self.pool.first_byte
        idle = self.pool.loop.time() - self._last
        if idle < limit:
            self._timer = self.pool.loop.call_at(self._last + limit, self._check_time)
            return
        self._timer = None
        response = self.response
        waiting_for = "more" if self._body_started else (
            "body" if response is not None and response.status >= 200 else "headers")
        self._fail(ReadTimeout(f"the server sent nothing for {limit:g} s", waiting_for))
        self._close()

    def _fail(self, error: BaseException) -> None:
        waiter = self.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        response = self.response
        if response is not None and not response._complete and response._error is None:
            response._error = error
            response._wake()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        self.closed = True
        if self.transport is None:
            return
        if not self.pool.loop.is_closed():
            self.transport.close()
            return
        # A closed loop cannot close its transports: end the connection at the socket.
        sock = self.transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError):
            sock.shutdown(socket.SHUT_RDWR)


class HTTPPool:
    """Up to ``connections`` keep-alive connections to the server of ``base_url``.

    ``headers`` go with every request. Timeouts in seconds: ``connect`` for opening a
    connection, ``pool`` for waiting for a free one, ``first_byte`` for the response to
    start (headers, then the first byte of the body), ``read`` for each later wait. ``proxy``
    (``http://[user:password@]host:port``) carries the requests: plain ones as absolute URLs,
    https ones through a CONNECT tunnel.
    """

    def __init__(self, base_url: str, *, connections: int = 512,
                 headers: Mapping[str, str] | None = None, connect: float = 10.0,
                 pool: float = 30.0, first_byte: float = 120.0, read: float = 300.0,
                 ssl_context: ssl.SSLContext | None = None, proxy: str | None = None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.loop = asyncio.get_running_loop()
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self.base_path = parts.path.rstrip("/")
        self.connections = connections
        self.connect, self.pool, self.first_byte, self.read = connect, pool, first_byte, read
        self.ssl_context = ssl_context or (ssl.create_default_context() if self.tls else None)
        self.proxy = urlsplit(proxy) if proxy else None
        fixed = {"Host": parts.netloc.rpartition("@")[2], "Accept-Encoding": "identity",
                 **(headers or {})}
        if self.proxy is not None and not self.tls and self.proxy.username:
            fixed["Proxy-Authorization"] = _basic(self.proxy.username, self.proxy.password)
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        """Send ``method path`` (relative to the base URL's path) and wait for the headers."""
        target = f"{self.base_path}/{path}"
        if self.proxy is not None and not self.tls:
            target = self.origin + target
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) if headers else ""
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        head = f"{method} {target} HTTP/1.1\r\n{self._fixed}{extra}{length}\r\n".encode()
        connection, reused = await self._acquire()
        try:
            return await self._send(connection, head, body)
        except ConnectionLost:
            if not reused or connection.received:
                raise
        # A kept-alive connection the server had closed just before: once more on a new one.
        connection, _ = await self._acquire(fresh=True)
        return await self._send(connection, head, body)

    @staticmethod
    async def _send(connection: _Connection, head: bytes, body: bytes | None) -> Response:
        try:
            return await connection.send(head, body)
        except BaseException:
            # Cancelled or failed before the headers: the response will never be read, so
            # the connection cannot carry another request.
            connection.response = None
            connection._stop_timer()
            connection._close()
            raise

    async def aclose(self) -> None:
        """Close every connection; requests after this fail."""
        self.closed = True
        for connection in [*self._idle, *self._busy]:
            connection._fail(ConnectionLost("the client was closed"))
            connection._close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionLost("the client was closed"))

    # -- the pool ----------------------------------------------------------------------

    async def _acquire(self, *, fresh: bool = False) -> tuple[_Connection, bool]:
        if self.closed:
            raise ConnectionLost("the client was closed")
        now = time.monotonic()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if connection.closed or now - connection.idle_since > KEEPALIVE_SECONDS:
                connection._close()
                continue
            self._busy.add(connection)
            return connection, True
        while len(self._busy) + self._opening >= self.connections:
            await self._wait_for_room()
            if self._idle and not fresh:
                return await self._acquire()
        self._opening += 1
        try:
            connection = await self._open()
        finally:
            self._opening -= 1
        self._busy.add(connection)
        return connection, False

    async def _wait_for_room(self) -> None:
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.pool):
                await waiter
        except TimeoutError:
            raise PoolTimeout(f"all {self.connections} connections stayed busy for "
                              f"{self.pool:g} s") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _put_back(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        if self.closed:
            connection._close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        self._wake_one()

    def _forget(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _open(self) -> _Connection:
        host, port = self.host, self.port
        if self.proxy is not None:
            host, port = self.proxy.hostname or "", self.proxy.port or 80
        tls_now = self.tls and self.proxy is None
        try:
            async with asyncio.timeout(self.connect):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self), host, port,
                    ssl=self.ssl_context if tls_now else None,
                    server_hostname=self.host if tls_now else None)
                if self.tls and self.proxy is not None:
                    await self._tunnel(connection)
        except TimeoutError:
            raise ConnectTimeout(f"could not connect to {host}:{port} within "
                                 f"{self.connect:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            if isinstance(exc, HTTPError):
                raise
            raise ConnectError(f"could not connect to {host}:{port}: {exc}",
                               _reason(exc)) from None
        return connection

    async def _tunnel(self, connection: _Connection) -> None:
        """Turn a connection to the proxy into a TLS connection to the server (CONNECT)."""
        assert self.proxy is not None and connection.transport is not None
        authority = f"{self.host}:{self.port}"
        auth = (f"Proxy-Authorization: {_basic(self.proxy.username, self.proxy.password)}\r\n"
                if self.proxy.username else "")
        connection.tunnel = bytearray()
        connection.tunnel_waiter = self.loop.create_future()
        connection.transport.write(
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n".encode())
        await connection.tunnel_waiter
        status_line = bytes(connection.tunnel).split(b"\r\n", 1)[0].decode("latin-1")
        if status_line.split(" ")[1:2] != ["200"]:
            connection._close()
            raise ConnectError(f"the proxy refused to connect to {authority}: {status_line}",
                               f"the proxy refused: {status_line}")
        connection.tunnel = connection.tunnel_waiter = None
        transport = await self.loop.start_tls(connection.transport, connection,
                                              self.ssl_context, server_hostname=self.host)
        if transport is None:
            raise ConnectError(f"TLS through the proxy to {authority} failed")
        connection.transport = transport  # type: ignore[assignment]


def _reason(exc: BaseException) -> str:
    """An OS error's own words (``Connection refused``), not asyncio's restatement."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _basic(user: str | None, password: str | None) -> str:
    pair = f"{unquote(user or '')}:{unquote(password or '')}".encode()
    return "Basic " + base64.b64encode(pair).decode()
