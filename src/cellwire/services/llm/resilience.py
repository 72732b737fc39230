"""The provider's own retry, and the server's ``Retry-After``.

A provider resends a request only when no connection could be opened (nothing reached the
server); its :class:`RetryPolicy` says how often and how long to wait. 429, 5xx, timeouts
and dropped connections raise a :class:`~.base.RetryableProviderError` with the server's
``Retry-After`` (:func:`parse_retry_after`) for the node's retry policy, which shows each
retry as an event.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

Sleep = Callable[[float], Awaitable[Any]]


@dataclass(slots=True)
class RetryPolicy:
    """How often and how long a provider retries a connection that could not be opened.

    ``retries`` is the number of extra attempts. The backoff before retry *n* is drawn from
    ``[b/2, b]`` with ``b = min(base * factor**(n-1), max_delay)``; a ``Retry-After`` longer
    than that wins, up to ``max_retry_after`` (also the longest a server's rate-limit reset
    holds a model's requests back).
    """

    retries: int = 3
    base: float = 0.5
    factor: float = 2.0
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    jitter: bool = True
    #: Injectable for tests (record delays, or skip them).
    sleep: Sleep = field(default=asyncio.sleep, repr=False)
    rng: random.Random | Any = field(default=random, repr=False)

    def delay(self, attempt: int, exc: BaseException | None = None) -> float | None:
        """Seconds before retry ``attempt`` (1-based); ``None`` when no retry should follow."""
        if attempt > self.retries:
            return None
        backoff = min(self.base * self.factor ** (attempt - 1), self.max_delay)
        wait = self.rng.uniform(backoff / 2, backoff) if self.jitter else backoff
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            wait = max(wait, retry_after)
        return wait


def parse_retry_after(headers: Mapping[str, str] | str | None,
                      now: float | None = None) -> float | None:
    """Seconds the server asks to wait: ``retry-after-ms``, then ``Retry-After`` as delta
    seconds or an HTTP date (relative to ``now``, epoch seconds; the clock by default).
    ``headers`` is a response's headers, or the value of one ``Retry-After`` header. ``None``
    when neither is present and valid."""
    if headers is None or isinstance(headers, str):
        value = (headers or "").strip()
    else:
        lower = {k.lower(): v for k, v in headers.items()}
        millis = _number(lower.get("retry-after-ms"))
        if millis is not None:
            return millis / 1000
        value = (lower.get("retry-after") or "").strip()
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return max(0.0, number) if math.isfinite(number) else None
