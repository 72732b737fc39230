"""Retry delays: exponential backoff with full jitter, and the server's ``Retry-After``."""

from __future__ import annotations

import random
from typing import Any

from cellwire.model import Retry


class RetryableError(Exception):
    """An error worth another attempt. ``retry_after`` (seconds) comes from the server."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    """An error no retry can fix (a bad config, a 4xx validation error)."""


def is_retryable(exc: BaseException) -> bool:
    return not isinstance(exc, FatalError) and not getattr(exc, "fatal", False)


def retry_delay(policy: Retry, attempt: int, exc: BaseException | None = None,
                rng: random.Random | Any = random) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    A ``Retry-After`` from the server wins when it asks for longer than the backoff, capped
    at ``max_interval``.
    """
    base = min(policy.interval * policy.backoff ** (attempt - 1), policy.max_interval)
    delay = rng.uniform(base / 2, base) if policy.jitter else base
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = max(delay, min(float(retry_after), policy.max_interval))
    return delay
