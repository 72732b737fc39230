"""HTTP for every part of cellwire: httpx's API over a fast HTTP/1.1 transport.

:class:`FastTransport` is the engine (:mod:`.engine`) as an ``httpx.AsyncBaseTransport``;
:class:`SharedHTTP` is the run's shared, pooled client (the runtime's ``http`` service);
:class:`NetworkPolicy` (:mod:`.guard`) what requests on a workflow's behalf may reach.
"""

from .engine import (
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    HeaderInjection,
    PoolTimeout,
    ReadTimeout,
    ResponseTooLarge,
)
from .guard import AddressRefused, NetworkPolicy
from .service import SHARED, SharedHTTP, fast_client
from .transport import (
    DEFAULT_MAX_BODY,
    FIRST_BYTE,
    NETWORK,
    FastTransport,
    env_proxy,
    ssl_context,
)

__all__ = [
    "DEFAULT_MAX_BODY", "FIRST_BYTE", "NETWORK", "SHARED", "AddressRefused", "ConnectError",
    "ConnectTimeout", "ConnectionLost", "FastTransport", "HeaderInjection", "NetworkPolicy",
    "PoolTimeout", "ReadTimeout", "ResponseTooLarge", "SharedHTTP", "env_proxy",
    "fast_client", "ssl_context",
]
