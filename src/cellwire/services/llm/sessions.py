"""One pooled aiohttp session per event loop, for providers that send many requests at once.

aiohttp rather than httpx: at 200 concurrent streams, httpx (httpcore's pool bookkeeping, its
request and response models) costs the client about 4 ms of CPU per request, aiohttp about
0.4 ms (benchmarks/llm_parallel.py). A session belongs to the loop that opened its
connections, so each loop gets its own; it is closed when that loop shuts down
(``asyncio.run`` and the notebook-free :func:`cellwire.run` close their loop after each run).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncGenerator, Callable
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp

#: The keeper of every open session, by loop and id of session: a session lives as long as its
#: loop, also when the provider that opened it is dropped without ``aclose()`` (as garbage,
#: aiohttp would report it unclosed).
_KEEPERS: dict[asyncio.AbstractEventLoop, dict[int, AsyncGenerator[None, None]]] = {}


class LoopSessions:
    """``get(factory)`` is this loop's session, made by ``factory`` on first use."""

    def __init__(self) -> None:
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def __len__(self) -> int:
        """How many loops have an open session."""
        return sum(not session.closed for session in self._sessions.values())

    async def get(self, factory: Callable[[], aiohttp.ClientSession]) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        found = self._sessions.get(loop)
        if found is not None and not found.closed:
            return found
        await _close_orphans()
        for old in [k for k, v in self._sessions.items() if v.closed or k.is_closed()]:
            del self._sessions[old]
        session = self._sessions[loop] = factory()
        # The loop closes its async generators when it shuts down (asyncio.run, Runner):
        # this one's ``finally`` closes the session then, before the loop is gone.
        keeper = _keep(loop, session)
        await anext(keeper)
        _KEEPERS.setdefault(loop, {})[id(session)] = keeper
        return session

    async def aclose(self) -> None:
        """Close this loop's session."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            keeper = _KEEPERS.get(asyncio.get_running_loop(), {}).get(id(session))
            await (keeper.aclose() if keeper is not None else session.close())


async def _keep(loop: asyncio.AbstractEventLoop,
                session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        keepers = _KEEPERS.get(loop, {})
        keepers.pop(id(session), None)
        if not keepers:
            _KEEPERS.pop(loop, None)
        await session.close()


async def _close_orphans() -> None:
    # Sessions of loops closed without shutting down their generators: close them quietly
    # (their sockets went with the loop) instead of aiohttp's "Unclosed" errors.
    for loop in [loop for loop in _KEEPERS if loop.is_closed()]:
        for keeper in list(_KEEPERS.get(loop, {}).values()):
            await keeper.aclose()


def new_session(base_url: str, *, connections: int, headers: dict[str, str], connect: float,
                read: float, pool: float) -> aiohttp.ClientSession:
    """A session for up to ``connections`` concurrent requests to the server at ``base_url``;
    seconds for connecting, each read, and waiting for a free connection."""
    context: ssl.SSLContext | bool = True
    if base_url.startswith("https:"):
        import httpx  # its context: certifi's roots and SSL_CERT_FILE, as before

        context = httpx.create_ssl_context()
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0,
                                     keepalive_timeout=30, ssl=context)
    timeout = aiohttp.ClientTimeout(total=None, connect=pool + connect, sock_connect=connect,
                                    sock_read=read)
    # Not trust_env: aiohttp would then look up netrc and the proxy in a thread on every
    # request. The environment's proxy for this one server is looked up once, here.
    return aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout,
                                 proxy=env_proxy(base_url),
                                 cookie_jar=aiohttp.DummyCookieJar())


def env_proxy(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY name for ``url``, unless NO_PROXY exempts it."""
    parts = urlsplit(url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
