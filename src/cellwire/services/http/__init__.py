"""HTTP for every part of cellwire: httpx's API over a fast HTTP/1.1 transport.

:class:`FastTransport` is the engine (:mod:`.engine`) as an ``httpx.AsyncBaseTransport``;
:class:`SharedHTTP` is the run's shared, pooled client (the runtime's ``http`` service).
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
from .service import SHARED, SharedHTTP, fast_client
from .transport import DEFAULT_MAX_BODY, FIRST_BYTE, FastTransport, env_proxy, ssl_context

__all__ = [
    "DEFAULT_MAX_BODY", "FIRST_BYTE", "SHARED", "ConnectError", "ConnectTimeout",
    "ConnectionLost", "FastTransport", "HeaderInjection", "PoolTimeout", "ReadTimeout",
    "ResponseTooLarge", "SharedHTTP", "env_proxy", "fast_client", "ssl_context",
]
