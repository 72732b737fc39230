"""The fast HTTP/1.1 engine behind httpx's transport interface.

``httpx.AsyncClient(transport=FastTransport())`` keeps httpx's API (URLs, headers, auth,
redirects, cookies, timeouts, streaming) and sends through :mod:`.engine`: one pool of
keep-alive connections per origin and event loop, closed with the loop. Bring httpx's own
transport instead for what this one leaves out: HTTP/2, SOCKS proxies, truststore.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.request import getproxies, proxy_bypass

import httpx

from .engine import _FOREVER, HTTPPool, Limits, Response, header_block
from .loops import PerLoop

if TYPE_CHECKING:
    from cellwire.engine.services import NetworkGuard

#: The default cap on a response body: far above any model reply or API answer, low enough
#: that a runaway body cannot exhaust memory.
DEFAULT_MAX_BODY = 256 * 1024 * 1024
#: A request extension: seconds for the response to start (headers, and the first byte of
#: the body) when that may take longer than later reads, as a model's first token does.
FIRST_BYTE = "cellwire.first_byte"
#: A request extension: the network policy (:class:`~.guard.NetworkPolicy`, or any
#: :class:`~cellwire.engine.services.NetworkGuard`) whose checked addresses the request's
#: connections go to.
NETWORK = "cellwire.network"

Verify = bool | str | os.PathLike[str] | ssl.SSLContext
Cert = str | os.PathLike[str] | tuple[str, str] | tuple[str, str, str]


def ssl_context(verify: Verify = True, cert: Cert | None = None) -> ssl.SSLContext:
    """The TLS context of ``verify`` (True: certifi's roots, or SSL_CERT_FILE / SSL_CERT_DIR;
    False: no checks; a path: that CA file or directory; or a context, used as is) with the
    client certificate ``cert`` (a PEM path, or ``(cert, key[, password])``) for mTLS."""
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        if os.environ.get("SSL_CERT_FILE"):
            context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            context = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
        else:
            import certifi

            context = ssl.create_default_context(cafile=certifi.where())
    else:
        path = Path(verify)
        if not path.exists():
            raise FileNotFoundError(f"verify={str(verify)!r}: no such CA file or directory; "
                                    "give the path of a PEM bundle, True or False")
        context = (ssl.create_default_context(capath=str(path)) if path.is_dir()
                   else ssl.create_default_context(cafile=str(path)))
    if cert is not None:
        if isinstance(cert, (tuple, list)):  # a YAML config gives a list
            context.load_cert_chain(*cert)
        else:
            context.load_cert_chain(os.fspath(cert))
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Pools:
    """One loop's pools, by origin (and network policy)."""

    def __init__(self) -> None:
        self.by_origin: dict[tuple[bytes, bytes, int | None, NetworkGuard | None],
                             HTTPPool] = {}

    async def aclose(self) -> None:
        pools, self.by_origin = list(self.by_origin.values()), {}
        for pool in pools:
            await pool.aclose()


class _Body(httpx.AsyncByteStream):
    """A response body as the engine receives it, its own iterator (an async generator
    would cost a loop hook and a finalizer per response); closing it returns the
    connection."""

    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        piece = await self._response.next_piece()
        if not piece:
            raise StopAsyncIteration
        return piece

    async def aclose(self) -> None:
        self._response.release()


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over :mod:`cellwire.services.http.engine`, as an httpx transport.

    ``verify`` and ``cert``: see :func:`ssl_context`. ``proxy`` (``http://[user:pw@]host:port``)
    carries every request (plain ones as absolute URLs, https ones through CONNECT); without
    it, ``trust_env`` takes HTTP(S)_PROXY / ALL_PROXY / NO_PROXY from the environment, except
    for servers on this machine. ``max_connections`` per origin and loop; ``max_body`` caps a
    response body in bytes (:class:`~.engine.ResponseTooLarge`). Header names and values with
    CR, LF or NUL are refused before anything is sent (:class:`~.engine.HeaderInjection`).
    Timeouts come from each request (httpx's ``timeout=``); the ``cellwire.first_byte``
    extension gives the wait for a response to start apart from later reads. A request with
    the ``cellwire.network`` extension (a :class:`~.guard.NetworkPolicy`) connects only to
    addresses that policy checked, on connections of its own.
    """

    def __init__(self, *, verify: Verify = True, cert: Cert | None = None,
                 proxy: str | None = None, trust_env: bool = True,
                 max_connections: int = 512, max_body: int | None = DEFAULT_MAX_BODY) -> None:
        self._verify, self._cert = verify, cert
        self._context: ssl.SSLContext | None = None
        self._proxy, self._trust_env = proxy, trust_env
        self.max_connections = max_connections
        self.max_body = max_body
        self._loops: PerLoop[_Pools] = PerLoop(_Pools)

    def __getstate__(self) -> dict[str, Any]:
        # Sent to another process (Dask workers) without its connections: they belong here.
        state = self.__dict__.copy()
        state["_loops"] = None
        state["_context"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._loops = PerLoop(_Pools)

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context of every https connection (made on first use)."""
        if self._context is None:
            self._context = ssl_context(self._verify, self._cert)
        return self._context

    def __len__(self) -> int:
        """How many event loops have open pools."""
        return len(self._loops)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pools = self._loops.current() or await self._loops.get()
        url = request.url
        extensions = request.extensions
        # Connections checked by one policy are not reused by a request under another.
        policy = extensions.get(NETWORK)
        key = (url.raw_scheme, url.raw_host, url.port, policy)
        pool = pools.by_origin.get(key)
        if pool is None:
            pool = pools.by_origin[key] = self._new_pool(url, policy)
        timeout = extensions.get("timeout") or {}
        read = _seconds(timeout.get("read"))
        limits = Limits(_seconds(timeout.get("connect")), _seconds(timeout.get("pool")),
                        _seconds(extensions.get(FIRST_BYTE, timeout.get("read"))), read,
                        self.max_body)
        raw = request.headers.raw
        if isinstance(request.stream, httpx.ByteStream):
            body: bytes = request.content if hasattr(request, "_content") \
                else await request.aread()
        else:
            # A streamed body is read whole and sent with its length rather than in chunks.
            body = await request.aread()
            raw = [(n, v) for n, v in raw if n.lower() not in (b"transfer-encoding",
                                                                 b"content-length")]
            raw.append((b"Content-Length", b"%d" % len(body)))
        try:
            response = await pool.send(request.method, url.raw_path.decode("ascii"),
                                       header_block(raw), body or None, limits)
        except httpx.RequestError as exc:
            exc.request = request
            raise
        return httpx.Response(response.status, headers=response.raw_headers,
                              stream=_Body(response), request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        """Close this event loop's connections (other loops' close with their loop)."""
        await self._loops.aclose()

    def _new_pool(self, url: httpx.URL, policy: NetworkGuard | None) -> HTTPPool:
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        proxy = self._proxy
        if proxy is None and self._trust_env:
            proxy = env_proxy(url)
        tls = url.scheme == "https"
        return HTTPPool(origin, connections=self.max_connections,
                        ssl_context=self.ssl_context if tls else None, proxy=proxy,
                        resolve=None if policy is None else policy.addresses)


def _seconds(value: Any) -> float:
    return _FOREVER if value is None else float(value)


def env_proxy(url: httpx.URL | str) -> str | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY name for ``url``, unless NO_PROXY exempts it or the
    server is on this machine (a local Ollama or llama.cpp server is never behind a proxy)."""
    url = httpx.URL(url) if isinstance(url, str) else url
    host = url.host
    if not host or _loopback(host) or proxy_bypass(host):
        return None
    proxies = getproxies()
    return proxies.get(url.scheme) or proxies.get("all")


def _loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
