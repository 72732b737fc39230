"""A lean HTTP/1.1 engine for many concurrent requests: asyncio + httptools.

Why not httpx's own transport (httpcore) or aiohttp: at 200 concurrent streams httpcore costs
the client about 4 ms of CPU per request, aiohttp about 220 us, this about 90 us
(benchmarks/llm_parallel.py), and a fan-out of LLM nodes has no room for the difference. It
is reached through httpx (:class:`~cellwire.services.http.FastTransport`), so callers use one
API whichever transport carries their requests. It does only HTTP/1.1: keep-alive
connections to one origin (http or https, directly or through an HTTP proxy), requests with a
bytes body, responses read whole or piece by piece as they arrive, four timeouts and a cap on
the body. Parsing is httptools' (llhttp, as in Node.js and uvicorn).

Timeouts cost one timer per request: it fires after ``first_byte`` (or ``read`` once the
body has started) and re-arms itself while data keeps coming, instead of being moved on
every read.

Its errors are httpx's exception classes, so a caller handles one family whichever
transport is used: :class:`ConnectError` and :class:`ConnectTimeout` mean nothing reached the
server (the request is safe to send again); everything later may have reached it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import httptools
import httpx

#: How long an idle connection is kept for reuse.
KEEPALIVE_SECONDS = 30.0
#: How long closing a pool waits for its connections' sockets to close.
CLOSE_SECONDS = 1.0
#: A wait without a limit, as a timer can hold it.
_FOREVER = 1e9
#: ``(host, port) -> addresses`` a new connection may go to (raises to refuse).
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]


class ConnectError(httpx.ConnectError):
    """No connection could be opened to the server (or its proxy); ``reason`` says why,
    without the address. Nothing was sent."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class ConnectionLost(httpx.RemoteProtocolError):
    """The server closed the connection before the response was complete."""


class ConnectTimeout(httpx.ConnectTimeout):
    """Connecting took longer than the ``connect`` timeout. Nothing was sent."""


class PoolTimeout(httpx.PoolTimeout):
    """Every connection stayed busy for longer than the ``pool`` timeout."""


class ReadTimeout(httpx.ReadTimeout):
    """The server sent nothing for longer than the ``first_byte`` or ``read`` timeout.
    ``waiting_for`` says what was due: ``"headers"``, ``"body"`` (its first byte) or
    ``"more"`` (the rest of a started body)."""

    def __init__(self, message: str, waiting_for: str) -> None:
        super().__init__(message)
        self.waiting_for = waiting_for


class ResponseTooLarge(httpx.RequestError):
    """The response body passed the transport's ``max_body`` cap; the connection was closed."""


class HeaderInjection(httpx.LocalProtocolError):
    """A header name or value holds CR, LF or NUL: sent as is it would end the header (or
    start a request of the caller's choosing), so nothing is sent."""


def header_block(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``name: value\\r\\n`` lines; raises :class:`HeaderInjection` for CR, LF or NUL in a
    name or value."""
    lines = []
    for name, value in headers:
        for part in (name, value):
            if b"\r" in part or b"\n" in part or b"\0" in part:
                raise HeaderInjection(
                    f"header {name.decode('latin-1')!r} holds a line break or NUL; remove it "
                    "(a header value must be one line)")
        lines.append(b"%s: %s\r\n" % (name, value))
    return b"".join(lines)


class Response:
    """A response whose headers have arrived; the body is read with :meth:`read` or, as it
    arrives, :meth:`next_piece`. ``release()`` must follow (it returns the connection to the pool)."""

    __slots__ = ("_complete", "_connection", "_error", "_pieces", "_released", "_waiter",
                 "raw_headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        #: The headers as they arrived: ``(name, value)`` bytes, in order.
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._connection = connection
        self._pieces: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._released = False

    @property
    def headers(self) -> dict[str, str]:
        """Header names in lower case; repeated headers joined by ", "."""
        out: dict[str, str] = {}
        for raw_name, raw_value in self.raw_headers:
            key, text = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            out[key] = f"{out[key]}, {text}" if key in out else text
        return out

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
        # This request's limits (seconds; bytes).
        self._first_byte = self._read = _FOREVER
        self._max_body: int | None = None
        self._body_size = 0
        #: Done when the connection is closed (its socket too).
        self.lost: asyncio.Future[None] = pool.loop.create_future()

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
        if not self.lost.done():
            self.lost.set_result(None)
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
        self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        if response.status < 200:
            return  # 1xx: the real response follows
        framed = False
        for name, value in response.raw_headers:
            lower = name.lower()
            if lower == b"content-length" or (
                    lower == b"transfer-encoding" and b"chunked" in value.lower()):
                framed = True
                break
        self._until_eof = not framed and response.status not in (204, 304)
        waiter = self.headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        self._body_started = True
        if self._max_body is not None:
            self._body_size += len(body)
            if self._body_size > self._max_body:
                self._fail(ResponseTooLarge(
                    f"the response body is larger than {self._max_body} bytes"))
                self._close()
                return
        response._pieces.append(body)
        response._wake()

    def on_message_complete(self) -> None:
        response = self.response
        assert response is not None
        if response.status < 200:  # 1xx: the real response follows on the same connection
            response.raw_headers = []
            return
        self._stop_timer()
        # Asked now: the parser forgets the message's headers once it is complete.
        self.keep_alive = self.parser.should_keep_alive()
        response._complete = True
        response._wake()

    # -- requests ----------------------------------------------------------------------

    async def send(self, head: bytes, body: bytes | None, limits: Limits) -> Response:
        """Write a request; the response once its headers arrive."""
        loop = self.pool.loop
        self.response = Response(self)
        self.received = self.keep_alive = self._body_started = self._until_eof = False
        self._first_byte, self._read, self._max_body = (
            limits.first_byte, limits.read, limits.max_body)
        self._body_size = 0
        self.headers_waiter = loop.create_future()
        self._last = loop.time()
        self._timer = loop.call_at(self._last + self._first_byte, self._check_time)
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
        limit = self._read if self._body_started else self._first_byte
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


class Limits(NamedTuple):
    """One request's limits: seconds to connect, to wait for a free connection, for the
    response to start (headers, then the body's first byte) and for each later read
    (``_FOREVER`` for none); ``max_body`` bytes of body (None: no cap)."""

    connect: float
    pool: float
    first_byte: float
    read: float
    max_body: int | None = None


class HTTPPool:
    """Up to ``connections`` keep-alive connections to the server of ``base_url``.

    ``headers`` go with every :meth:`request`. Timeouts in seconds: ``connect`` for opening a
    connection, ``pool`` for waiting for a free one, ``first_byte`` for the response to
    start (headers, then the first byte of the body), ``read`` for each later wait;
    ``max_body`` caps a response body (bytes). ``proxy`` (``http://[user:password@]host:port``)
    carries the requests: plain ones as absolute URLs, https ones through a CONNECT tunnel.
    ``resolve`` gives the addresses a new connection may go to (a network policy's checked
    ones, :meth:`~cellwire.services.http.guard.NetworkPolicy.addresses`); it is asked for
    every connection and may refuse, and the connection goes to one of them, never to an
    address resolved anew. Through a proxy the server's name is checked, but the proxy
    connects.
    """

    def __init__(self, base_url: str, *, connections: int = 512,
                 headers: Mapping[str, str] | None = None, connect: float = 10.0,
                 pool: float = 30.0, first_byte: float = 120.0, read: float = 300.0,
                 max_body: int | None = None, ssl_context: ssl.SSLContext | None = None,
                 proxy: str | None = None, resolve: Resolve | None = None):
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
        self.limits = Limits(connect, pool, first_byte, read, max_body)
        self.ssl_context = ssl_context or (ssl.create_default_context() if self.tls else None)
        self.proxy = urlsplit(proxy) if proxy else None
        self.resolve = resolve
        fixed = {"Host": parts.netloc.rpartition("@")[2], "Accept-Encoding": "identity",
                 **(headers or {})}
        self._fixed = header_block((k.encode("latin-1"), v.encode("latin-1"))
                                   for k, v in fixed.items())
        #: What a plain request through an authenticating proxy adds.
        self.proxy_headers = header_block(
            [(b"Proxy-Authorization", _basic(self.proxy.username, self.proxy.password).encode())]
        ) if self.proxy is not None and not self.tls and self.proxy.username else b""
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        """Send ``method path`` (relative to the base URL's path) with the pool's headers and
        limits, and wait for the response's headers."""
        extra = header_block((k.encode("latin-1"), v.encode("latin-1"))
                             for k, v in headers.items()) if headers else b""
        if body is not None:
            extra += b"Content-Length: %d\r\n" % len(body)
        return await self.send(method, f"{self.base_path}/{path}", self._fixed + extra, body,
                               self.limits)

    async def send(self, method: str, target: str, head: bytes, body: bytes | None,
                   limits: Limits) -> Response:
        """Send ``method target`` (the path and query) with the header lines ``head`` (from
        :func:`header_block`, framing included) and wait for the response's headers."""
        if self.proxy is not None and not self.tls:
            target = self.origin + target
            head += self.proxy_headers
        message = b"%s %s HTTP/1.1\r\n%s\r\n" % (method.encode("ascii"),
                                                  target.encode("ascii"), head)
        connection, reused = await self._acquire(limits)
        try:
            return await self._send(connection, message, body, limits)
        except ConnectionLost:
            if not reused or connection.received:
                raise
        # A kept-alive connection the server had closed just before: once more on a new one.
        connection, _ = await self._acquire(limits, fresh=True)
        return await self._send(connection, message, body, limits)

    @staticmethod
    async def _send(connection: _Connection, head: bytes, body: bytes | None,
                    limits: Limits) -> Response:
        try:
            return await connection.send(head, body, limits)
        except BaseException:
            # Cancelled or failed before the headers: the response will never be read, so
            # the connection cannot carry another request.
            connection.response = None
            connection._stop_timer()
            connection._close()
            raise

    async def aclose(self) -> None:
        """Close every connection, and wait (briefly) until their sockets are closed: a TLS
        connection closes after its shutdown, and a loop ended before that would leave the
        socket to the garbage collector. Requests after this fail."""
        self.closed = True
        connections = [*self._idle, *self._busy]
        for connection in connections:
            connection._fail(ConnectionLost("the client was closed"))
            connection._close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionLost("the client was closed"))
        pending = [c.lost for c in connections if not c.lost.done()]
        if pending and not self.loop.is_closed():
            await asyncio.wait(pending, timeout=CLOSE_SECONDS)

    # -- the pool ----------------------------------------------------------------------

    async def _acquire(self, limits: Limits, *, fresh: bool = False
                       ) -> tuple[_Connection, bool]:
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
            await self._wait_for_room(limits.pool)
            if self._idle and not fresh:
                return await self._acquire(limits)
        self._opening += 1
        try:
            connection = await self._open(limits.connect)
        finally:
            self._opening -= 1
        self._busy.add(connection)
        return connection, False

    async def _wait_for_room(self, timeout: float) -> None:
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise PoolTimeout(f"all {self.connections} connections stayed busy for "
                              f"{timeout:g} s") from None
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

    async def _open(self, timeout: float) -> _Connection:
        host, port = self.host, self.port
        tls_now = self.tls and self.proxy is None
        try:
            async with asyncio.timeout(timeout):
                targets: Sequence[str] = [host] if self.resolve is None \
                    else await self.resolve(host, port)
                if self.proxy is not None:
                    host, port = self.proxy.hostname or "", self.proxy.port or 80
                    targets = [host]
                connection = await self._connect(targets, port, tls_now)
                if self.tls and self.proxy is not None:
                    try:
                        await self._tunnel(connection)
                    except BaseException:
                        # The socket to the proxy is open: a failed tunnel must not leak it.
                        connection._close()
                        raise
        except TimeoutError:
            raise ConnectTimeout(f"could not connect to {host}:{port} within "
                                 f"{timeout:g} s") from None
        except ConnectionLost as exc:
            raise ConnectError(f"could not connect to {host}:{port}: {exc}", str(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"could not connect to {host}:{port}: {exc}",
                               _reason(exc)) from None
        return connection

    async def _connect(self, targets: Sequence[str], port: int, tls: bool) -> _Connection:
        """A connection to the first of ``targets`` (names or addresses) that answers."""
        error: OSError | None = None
        for target in targets:
            try:
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self), target, port,
                    ssl=self.ssl_context if tls else None,
                    server_hostname=self.host if tls else None)
                return connection
            except ssl.SSLError:
                raise  # the server answered: another of its addresses would say the same
            except OSError as exc:
                error = exc
        assert error is not None, "a pool connects to at least one address"
        raise error

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
        assert self.ssl_context is not None, "a CONNECT tunnel is opened for https only"
        transport = await self.loop.start_tls(connection.transport, connection,
                                              self.ssl_context, server_hostname=self.host)
        if transport is None:
            raise ConnectError(f"TLS through the proxy to {authority} failed")
        connection.transport = transport


def _reason(exc: BaseException) -> str:
    """An OS error's own words (``Connection refused``), not asyncio's restatement."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _basic(user: str | None, password: str | None) -> str:
    pair = f"{unquote(user or '')}:{unquote(password or '')}".encode()
    return "Basic " + base64.b64encode(pair).decode()
