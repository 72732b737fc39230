"""Limits a served app puts on each caller: requests per second, concurrent runs, body size.

* :class:`RateLimiter`: a token bucket per key; an empty bucket answers 429
  ``too_many_requests`` with ``Retry-After`` (whole seconds, rounded up).
* :class:`RunSlots`: how many runs one key may have going at once; one more answers 429.
* :class:`BodyLimit`: ASGI middleware answering 413 in Dify's error shape for a body over the
  limit, whether it says so in ``Content-Length`` or streams it in chunks.

Limits are per process: with ``--workers N`` each worker keeps its own buckets and slots.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ServeError

Clock = Callable[[], float]

#: Bytes of a refused body still read (and dropped) before the 413 is sent: a server that
#: closes a socket with unread data resets the connection, and the client may lose the answer.
DRAIN_BYTES = 8 * 1024 * 1024

#: Buckets kept before full (idle) ones are forgotten, so many callers cannot grow memory.
_MAX_BUCKETS = 10_000


@dataclass(slots=True)
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each request takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def full(self, now: float) -> bool:
        """True when the bucket would be full at ``now`` (its caller has been idle)."""
        return self.tokens + (now - self.updated) * self.rate >= self.burst


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, ``burst`` at once.

    ``clock`` is monotonic seconds (``time.monotonic``); tests may give their own.
    """

    def __init__(self, rate: float, burst: int, *, clock: Clock = time.monotonic):
        if not rate > 0:
            raise ValueError(f"rate must be a positive number of requests per second, not {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1 request, not {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Count one request of ``key``; ServeError 429 with ``Retry-After`` when over."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= _MAX_BUCKETS:
                    self._forget_idle(now)
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
            wait = bucket.take(now)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ServeError(429, "too_many_requests",
                             f"Too many requests: this key may make {self.rate:g} requests per "
                             f"second (bursts of {self.burst:g}); retry in {seconds} s.",
                             {"Retry-After": str(seconds)})

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]


class _Slot:
    """One taken run slot; ``release()`` gives it back once, however often it is called."""

    def __init__(self, owner: RunSlots, key: str):
        self._owner = owner
        self._key = key
        self._released = False

    def release(self) -> None:
        with self._owner._lock:
            if self._released:
                return
            self._released = True
            left = self._owner._taken[self._key] - 1
            if left:
                self._owner._taken[self._key] = left
            else:
                del self._owner._taken[self._key]


class RunSlots:
    """At most ``limit`` runs going at once per key (None: no limit)."""

    def __init__(self, limit: int | None):
        if limit is not None and limit < 1:
            raise ValueError(f"max concurrent runs must be at least 1 (or None), not {limit!r}")
        self.limit = limit
        self._taken: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> _Slot:
        """A slot for one more run of ``key``; ServeError 429 when all are taken."""
        with self._lock:
            taken = self._taken.get(key, 0)
            if self.limit is not None and taken >= self.limit:
                raise ServeError(429, "too_many_requests",
                                 f"Too many runs at once: this key may have {self.limit} runs "
                                 "going at a time; wait for one to finish.",
                                 {"Retry-After": "1"})
            self._taken[key] = taken + 1
        return _Slot(self, key)

    def active(self, key: str) -> int:
        """How many runs of ``key`` hold a slot now."""
        with self._lock:
            return self._taken.get(key, 0)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413
    ``request_entity_too_large`` (Dify's code for it), never handed on whole.

    A declared ``Content-Length`` over the limit is refused before the app sees the request;
    a body streamed without one (chunked) is counted as it arrives, and the app's reading of
    it fails the moment it passes the limit. Whatever the app then answers is replaced by the
    413, unless it had started answering already.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be a size in bytes, not {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _drain(receive)
            await self._refuse(send)
            return
        received = 0
        exceeded = False
        started = False
        complete = False

        async def limited() -> Message:
            nonlocal received, exceeded, complete
            message = await receive()
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to a body it could not read: the 413 replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except _BodyTooLarge:
            if started:
                raise
        if exceeded and not started:
            if not complete:
                await _drain(receive)
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = ServeError(413, "request_entity_too_large",
                           f"The request body is larger than the server accepts "
                           f"({self.max_bytes} bytes).")
        body = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive) -> None:
    left = DRAIN_BYTES
    while left > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        left -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


__all__ = ["BodyLimit", "Clock", "RateLimiter", "RunSlots", "TokenBucket"]
