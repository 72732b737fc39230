"""The providers' HTTP plumbing: one connection pool per event loop, its timeouts, and what a
failed connection means to a provider.

A pool belongs to the loop that opened its connections, so each loop gets its own; it is
closed when that loop shuts down (``asyncio.run`` and the notebook-free :func:`cellwire.run`
close their loop after each run).
"""

from __future__ import annotations

import abc
import asyncio
import ipaddress
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import orjson

import cellwire

from .base import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ProviderError,
    ProviderTimeout,
    RetryableProviderError,
)
from .http1 import ConnectError, ConnectTimeout, HTTPPool, PoolTimeout, ReadTimeout, Response
from .ratelimit import RATE_LIMITS, RateLimits
from .resilience import RetryPolicy, call_with_retries, stream_with_retries

#: How much of a server's text an error message quotes.
SNIPPET = 200
#: How long to read on after a stream's last event for the end of the body (keeps the
#: connection for the next request).
DRAIN_SECONDS = 1.0


@dataclass(slots=True)
class Timeouts:
    """Seconds: ``first_byte`` bounds the wait for the response headers and for the first
    bytes of a stream (a model's time to first token); ``read`` each later read; ``pool``
    the wait for a free connection. ``write`` is kept for old configs and not used."""

    connect: float = 10.0
    read: float = 300.0
    write: float = 30.0
    pool: float = 30.0
    first_byte: float = 120.0

#: The keeper of every open pool, by loop and id of pool: a pool lives as long as its
#: loop, also when the provider that opened it is dropped without ``aclose()`` (its sockets
#: would otherwise stay open until the garbage collector finds them).
_KEEPERS: dict[asyncio.AbstractEventLoop, dict[int, AsyncGenerator[None, None]]] = {}


class LoopPools:
    """``get(factory)`` is this loop's pool, made by ``factory`` on first use."""

    def __init__(self) -> None:
        self._pools: dict[asyncio.AbstractEventLoop, HTTPPool] = {}

    def __len__(self) -> int:
        """How many loops have an open pool."""
        return sum(not pool.closed for pool in self._pools.values())

    async def get(self, factory: Callable[[], HTTPPool]) -> HTTPPool:
        loop = asyncio.get_running_loop()
        found = self._pools.get(loop)
        if found is not None and not found.closed:
            return found
        await _close_orphans()
        for old in [k for k, v in self._pools.items() if v.closed or k.is_closed()]:
            del self._pools[old]
        pool = self._pools[loop] = factory()
        # The loop closes its async generators when it shuts down (asyncio.run, Runner):
        # this one's ``finally`` closes the pool then, before the loop is gone.
        keeper = _keep(loop, pool)
        await anext(keeper)
        _KEEPERS.setdefault(loop, {})[id(pool)] = keeper
        return pool

    async def aclose(self) -> None:
        """Close this loop's pool."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            keeper = _KEEPERS.get(asyncio.get_running_loop(), {}).get(id(pool))
            await (keeper.aclose() if keeper is not None else pool.aclose())


async def _keep(loop: asyncio.AbstractEventLoop,
                pool: HTTPPool) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        keepers = _KEEPERS.get(loop, {})
        keepers.pop(id(pool), None)
        if not keepers:
            _KEEPERS.pop(loop, None)
        await pool.aclose()


async def _close_orphans() -> None:
    # Pools of loops closed without shutting down their generators: close them quietly
    # (their sockets went with the loop).
    for loop in [loop for loop in _KEEPERS if loop.is_closed()]:
        for keeper in list(_KEEPERS.get(loop, {}).values()):
            await keeper.aclose()


def new_pool(base_url: str, *, connections: int, headers: dict[str, str], connect: float,
                pool: float, first_byte: float, read: float) -> HTTPPool:
    """A pool of up to ``connections`` connections to the server at ``base_url``, through
    the environment's proxy for it; timeouts in seconds (see :class:`HTTPPool`)."""
    context: ssl.SSLContext | None = None
    if base_url.startswith("https:"):
        import httpx  # its context: certifi's roots and SSL_CERT_FILE, as before

        context = httpx.create_ssl_context()
    return HTTPPool(base_url, connections=connections, headers=headers, connect=connect,
                    pool=pool, first_byte=first_byte, read=read, ssl_context=context,
                    proxy=env_proxy(base_url))


def env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY name for ``url``, unless NO_PROXY exempts it or the
    server is on this machine (a local Ollama or llama.cpp server is never behind a proxy)."""
    parts = urlsplit(url)
    if not parts.hostname or _loopback(parts.hostname) or proxy_bypass(parts.hostname):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def provider_error(exc: BaseException, *, server: str, timeouts: Timeouts, provider: str,
                   model: str | None,
                   scrub: Callable[[str], str] = lambda text: text) -> ProviderError:
    """The provider error for a failed connection or read (retryable where another attempt
    may succeed); ``server`` names the server in the message, ``scrub`` cleans what the
    exception says (of an API key)."""
    if isinstance(exc, ProviderError):
        return exc
    where = {"provider": provider, "model": model}
    detail = scrub(str(exc)) or repr(exc)
    if isinstance(exc, ConnectTimeout):
        return ProviderTimeout(f"could not connect to {server} within {timeouts.connect:g} s",
                               **where)
    if isinstance(exc, PoolTimeout):
        return ProviderTimeout(f"no free connection to {server}: {detail}", **where,
                               hint="raise max_connections or timeouts.pool")
    if isinstance(exc, ReadTimeout):
        if exc.waiting_for == "headers":
            return ProviderTimeout(f"{server} sent no response within "
                                   f"{timeouts.first_byte:g} s", **where,
                                   hint="raise timeouts.first_byte, or retry")
        if exc.waiting_for == "body":
            return ProviderTimeout(f"{server} started a stream but sent nothing within "
                                   f"{timeouts.first_byte:g} s", **where,
                                   hint="raise timeouts.first_byte, or retry")
        return ProviderTimeout(f"{server} stopped sending for {timeouts.read:g} s", **where,
                               hint="raise timeouts.read, or retry")
    if isinstance(exc, ConnectError):
        return RetryableProviderError(f"could not connect to {server}: {scrub(exc.reason)}",
                                      **where,
                                      hint="is the server running?")
    if isinstance(exc, OSError):
        return RetryableProviderError(f"the connection to {server} dropped: {detail}", **where)
    return ProviderError(f"request to {server} failed: {detail}", **where)


async def drain(response: Response) -> None:
    """Read a response to its end, briefly, so its connection goes back to the pool;
    releasing it unread would cost a new connection for the next request."""
    if response.at_eof:
        return
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            await response.read()
    except (TimeoutError, OSError):
        pass


def snippet(text: str) -> str:
    """The start of what a server sent, quoted, for an error message."""
    text = text.strip()
    return repr(text[:SNIPPET] + ("..." if len(text) > SNIPPET else ""))


def stream_event(payload: str, *, server: str, provider: str, model: str,
                 scrub: Callable[[str], str], wire: str) -> dict[str, Any]:
    """One stream event's JSON object; a clear, non-retried error when it is not one
    (``wire`` names the format the server should speak)."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"{server} sent malformed JSON in its stream: {exc}: "
                            f"{scrub(snippet(payload))}", provider=provider, model=model,
                            hint=f"the server's stream is not {wire}") from None
    if not isinstance(event, dict):
        raise ProviderError(f"{server} sent a stream event that is not an object: "
                            f"{scrub(snippet(payload))}", provider=provider, model=model)
    return event


class HTTPProvider(abc.ABC):
    """What the HTTP providers share: a name and server, an API key kept out of every message,
    timeouts, a retry policy, the process-wide rate limits, and a connection pool per loop.

    ``rpm`` / ``tpm`` limit every model of the provider; ``model_limits`` maps a model to
    ``(rpm, tpm)``. Mappings for ``timeouts`` and ``retry`` come from config files
    (providers.yaml: ``timeouts: {first_byte: 30}``). Subclasses give the headers their
    server wants on every request (:meth:`_pool_headers`).
    """

    def __init__(self, name: str, *, base_url: str, api_key: str | None,
                 timeouts: Timeouts | Mapping[str, float] | None,
                 retry: RetryPolicy | Mapping[str, Any] | None, rpm: float | None,
                 tpm: float | None,
                 model_limits: Mapping[str, tuple[float | None, float | None]] | None,
                 rate_limits: RateLimits | None, max_connections: int):
        self.name = name
        self.base_url = base_url
        self._api_key = api_key or None
        self.timeouts = Timeouts(**timeouts) if isinstance(timeouts, Mapping) else (
            timeouts or Timeouts())
        self.retry = RetryPolicy(**retry) if isinstance(retry, Mapping) else (
            retry or RetryPolicy())
        self._limits = RATE_LIMITS if rate_limits is None else rate_limits
        if rpm is not None or tpm is not None:
            self._limits.configure(name, rpm=rpm, tpm=tpm)
        for model, (model_rpm, model_tpm) in (model_limits or {}).items():
            self._limits.configure(name, rpm=model_rpm, tpm=model_tpm, model=model)
        self.max_connections = max_connections
        self._clients = LoopPools()

    def __repr__(self) -> str:  # no key in reprs
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    @property
    def server(self) -> str:
        """How errors name the server."""
        return f"{self.name} ({self.base_url})"

    async def pool(self) -> HTTPPool:
        """This event loop's connection pool (connections belong to the loop that opened
        them, and scripts run each ``cellwire.run`` on a loop of its own)."""
        return await self._clients.get(self._new_pool)

    async def aclose(self) -> None:
        """Close this event loop's connection pool."""
        await self._clients.aclose()

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The whole reply, retried as :attr:`retry` allows."""
        return await call_with_retries(lambda: self._chat_once(request), self.retry)

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """The reply as chunks; retried only until the first chunk reached the caller."""
        return stream_with_retries(lambda: self._stream_once(request), self.retry,
                                   describe=f"the stream from {self.server}")

    @abc.abstractmethod
    async def _chat_once(self, request: ChatRequest) -> ChatResponse:
        """One attempt at the whole reply."""

    @abc.abstractmethod
    def _stream_once(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """One attempt at the reply as chunks."""

    def _pool_headers(self) -> dict[str, str]:
        return {}

    def _new_pool(self) -> HTTPPool:
        headers = {"Accept": "application/json", "User-Agent": f"cellwire/{cellwire.__version__}",
                   **self._pool_headers()}
        t = self.timeouts
        return new_pool(self.base_url, connections=self.max_connections, headers=headers,
                        connect=t.connect, pool=t.pool, first_byte=t.first_byte, read=t.read)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key and text else text

    def _transport_error(self, exc: BaseException, model: str | None) -> ProviderError:
        return provider_error(exc, server=self.server, timeouts=self.timeouts,
                              provider=self.name, model=model, scrub=self._scrub)
