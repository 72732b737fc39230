"""HTTP for every part of cellwire: httpx's API over a fast HTTP/1.1 transport.

:class:`FastTransport` is the engine (:mod:`.engine`) as an ``httpx.AsyncBaseTransport``;
:class:`SharedHTTP` is the run's shared, pooled client (the runtime's ``http`` service);
:class:`NetworkPolicy` (:mod:`.guard`) what requests on a workflow's behalf may reach.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import (
        ConnectError,
        ConnectionLost,
        ConnectTimeout,
        HeaderInjection,
        PoolTimeout,
        ReadTimeout,
        ResponseTooLarge,
    )
    from .guard import NetworkPolicy
    from .refused import AddressRefused
    from .service import SHARED, SharedHTTP, fast_client
    from .transport import (
        DEFAULT_MAX_BODY,
        FIRST_BYTE,
        NETWORK,
        FastTransport,
        env_proxy,
        ssl_context,
    )

#: The module of each name (the same names as the imports above). They load on first use
#: (PEP 562): the engine and the transport bring httpx, about 70 ms of imports (80 with
#: rich and pygments installed, which httpx's command line loads) that a run making no
#: request does not need.
_LAZY = {
    **dict.fromkeys(["ConnectError", "ConnectionLost", "ConnectTimeout", "HeaderInjection",
                     "PoolTimeout", "ReadTimeout", "ResponseTooLarge"], ".engine"),
    "NetworkPolicy": ".guard",
    "AddressRefused": ".refused",
    **dict.fromkeys(["SHARED", "SharedHTTP", "fast_client"], ".service"),
    **dict.fromkeys(["DEFAULT_MAX_BODY", "FIRST_BYTE", "NETWORK", "FastTransport",
                     "env_proxy", "ssl_context"], ".transport"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = [
    "DEFAULT_MAX_BODY", "FIRST_BYTE", "NETWORK", "SHARED", "AddressRefused", "ConnectError",
    "ConnectTimeout", "ConnectionLost", "FastTransport", "HeaderInjection", "NetworkPolicy",
    "PoolTimeout", "ReadTimeout", "ResponseTooLarge", "SharedHTTP", "env_proxy",
    "fast_client", "ssl_context",
]
