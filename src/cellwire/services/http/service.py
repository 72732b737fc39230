"""The run's shared HTTP client: one pooled ``httpx.AsyncClient`` per event loop.

It implements :class:`cellwire.engine.services.HTTPService`. Nodes that call HTTP APIs take
their client from it instead of building one per execution, so connections are reused
across nodes and runs on the same loop. A client is closed when its loop shuts down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

import httpx

from .transport import FastTransport

#: A factory of clients: ``verify`` is False for nodes that skip certificate checks.
ClientFactory = Callable[[bool], httpx.AsyncClient]


def fast_client(verify: bool = True) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over :class:`FastTransport` (HTTP/1.1)."""
    return httpx.AsyncClient(transport=FastTransport(verify=verify))


class SharedHTTP:
    """One client per event loop and per ``verify`` setting, made by ``factory`` (a
    :class:`FastTransport` client by default; pass one that builds httpx's own transport for
    HTTP/2, SOCKS proxies or truststore) and closed when its loop shuts down."""

    def __init__(self, factory: ClientFactory = fast_client) -> None:
        self._factory = factory
        self._clients: dict[tuple[asyncio.AbstractEventLoop, bool],
                            tuple[httpx.AsyncClient, AsyncGenerator[None, None]]] = {}

    def client(self, *, verify: bool = True) -> httpx.AsyncClient:
        """This loop's client (made on first use); ``verify=False`` skips TLS checks."""
        loop = asyncio.get_running_loop()
        found = self._clients.get((loop, verify))
        if found is not None and not found[0].is_closed:
            return found[0]
        for key in [k for k, (c, _) in self._clients.items() if k[0].is_closed() or c.is_closed]:
            del self._clients[key]
        client = self._factory(verify)
        # Closed as the loop shuts down (asyncio.run, Runner close their async generators
        # while the loop still runs); started on the loop, as this method is not async.
        keeper = self._keep(loop, verify, client)
        self._clients[(loop, verify)] = (client, keeper)
        loop.create_task(_start(keeper))
        return client

    def __len__(self) -> int:
        """How many clients are open."""
        return sum(not client.is_closed for client, _ in self._clients.values())

    async def aclose(self) -> None:
        """Close this loop's clients."""
        loop = asyncio.get_running_loop()
        for key in [k for k in self._clients if k[0] is loop]:
            client, keeper = self._clients.pop(key)
            await keeper.aclose()
            await client.aclose()

    async def _keep(self, loop: asyncio.AbstractEventLoop, verify: bool,
                    client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            found = self._clients.get((loop, verify))
            if found is not None and found[0] is client:
                del self._clients[(loop, verify)]
            await client.aclose()


async def _start(keeper: AsyncGenerator[None, None]) -> None:
    await anext(keeper)


#: The service of runs given none (the runner passes its own).
SHARED = SharedHTTP()
