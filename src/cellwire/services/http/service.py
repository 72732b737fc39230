"""The run's shared HTTP client: one pooled ``httpx.AsyncClient`` per event loop.

It implements :class:`cellwire.engine.services.HTTPService`. Nodes that call HTTP APIs take
their client from it instead of building one per execution, so connections are reused
across nodes and runs on the same loop. A client is closed when its loop shuts down.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from .loops import PerLoop

if TYPE_CHECKING:
    import httpx

#: A factory of clients: ``verify`` is False for nodes that skip certificate checks.
ClientFactory = Callable[[bool], "httpx.AsyncClient"]


def fast_client(verify: bool = True) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over :class:`FastTransport` (HTTP/1.1)."""
    # Here, not at the top: httpx loads with the first client, not with the runner.
    import httpx

    from .transport import FastTransport

    return httpx.AsyncClient(transport=FastTransport(verify=verify))


class SharedHTTP:
    """One client per event loop and per ``verify`` setting, made by ``factory`` (a
    :class:`FastTransport` client by default; pass one that builds httpx's own transport for
    HTTP/2, SOCKS proxies or truststore) and closed when its loop shuts down."""

    def __init__(self, factory: ClientFactory = fast_client) -> None:
        self._clients = {verify: PerLoop(partial(factory, verify)) for verify in (True, False)}

    def client(self, *, verify: bool = True) -> httpx.AsyncClient:
        """This loop's client (made on first use); ``verify=False`` skips TLS checks."""
        return self._clients[verify].get_nowait(usable=_open)

    def __len__(self) -> int:
        """How many clients are open."""
        return sum(len(clients) for clients in self._clients.values())

    async def aclose(self) -> None:
        """Close this loop's clients."""
        for clients in self._clients.values():
            await clients.aclose()


def _open(client: httpx.AsyncClient) -> bool:
    return not client.is_closed


#: The service of runs given none (the runner passes its own).
SHARED = SharedHTTP()
