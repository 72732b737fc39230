"""Client-side rate limits: requests and tokens per minute, per provider and model.

One :class:`RateLimiter` per ``(provider, model)`` lives in a process-wide
:class:`RateLimits` registry, so every node, batch row and run of the process shares it.
Both limits are token buckets that hold a minute's worth and refill continuously. A request
takes its share at once, into debt if need be, and sleeps (``asyncio.sleep``: the loop never
blocks) until the debt is paid off: each caller queues behind the ones before it, first come,
first served, whichever event loop or thread it runs on (a notebook's loop, the loop of a
blocking ``run``, Dask workers in threads). It reserves its estimated tokens before it is sent
and :meth:`Permit.settle` corrects the bucket with the real usage afterwards. When a server says its own limit is spent (a 429
with ``Retry-After``, Anthropic's ``anthropic-ratelimit-*-remaining: 0``), :meth:`RateLimiter.hold`
makes every later request of that provider and model wait, not only the one that was told.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

_EPSILON = 1e-9


class _Bucket:
    def __init__(self, per_minute: float, now: float):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        # max(): a clock behind the stamp (another loop's, a test's virtual one) adds nothing.
        self.level = min(self.capacity, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (after :meth:`refill`)."""
        missing = amount - self.level
        return 0.0 if missing <= _EPSILON else missing / self.rate


@dataclass(slots=True)
class Permit:
    """A granted request: ``tokens`` were reserved; settle with what the call really used."""

    limiter: RateLimiter | None
    tokens: int = 0

    def settle(self, used_tokens: int) -> None:
        """Charge the difference between the real and the estimated tokens (once)."""
        if self.limiter is not None:
            self.limiter._correct(used_tokens - self.tokens)
            self.limiter = None


class RateLimiter:
    """``rpm`` requests and ``tpm`` tokens per minute (``None``: unlimited)."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        if rpm is not None and rpm <= 0 or tpm is not None and tpm <= 0:
            raise ValueError("rpm and tpm must be positive (or None for no limit)")
        self.rpm, self.tpm = rpm, tpm
        # A thread lock, never held across an await: callers may run on several loops.
        self._mutex = threading.Lock()
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        #: Clock time before which no request goes out (the server asked for a pause).
        self._held_until = 0.0

    def hold(self, seconds: float) -> None:
        """The server asked for a pause: requests acquired in the next ``seconds`` wait."""
        if seconds > 0:
            now = _now()
            with self._mutex:
                self._held_until = max(self._held_until, now + seconds)

    def held_for(self) -> float:
        """Seconds a request acquired now would wait for a :meth:`hold` (0 when none)."""
        return max(0.0, self._held_until - _now())

    async def acquire(self, tokens: int = 0) -> Permit:
        """Wait until one request and ``tokens`` tokens fit, then take them."""
        if self.rpm is None and self.tpm is None and not self._held_until:
            return Permit(None, tokens)
        with self._mutex:
            wait = self._take(_now(), tokens)
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                with self._mutex:  # never sent: give its share back
                    self._give_back(tokens)
                raise
        return Permit(self, tokens)

    def _take(self, now: float, tokens: int) -> float:
        """Take a request's share now; the seconds until the buckets have paid for it."""
        wait = self._held_until - now
        if wait <= 0:
            self._held_until = 0.0  # any pause is over: back to the fast path
        if self.rpm is not None:
            if self._requests is None:
                self._requests = _Bucket(self.rpm, now)
            self._requests.refill(now)
            wait = max(wait, self._requests.wait_for(1))
            self._requests.level -= 1
        if self.tpm is not None:
            if self._tokens is None:
                self._tokens = _Bucket(self.tpm, now)
            self._tokens.refill(now)
            # A request larger than the bucket waits for a full bucket, not forever.
            wait = max(wait, self._tokens.wait_for(min(tokens, self._tokens.capacity)))
            self._tokens.level -= tokens
        return wait

    def _give_back(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.level = min(self._requests.capacity, self._requests.level + 1)
        if self._tokens is not None:
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + tokens)

    def _correct(self, delta: int) -> None:
        # A negative level is debt: later requests wait for it to refill.
        with self._mutex:
            if self._tokens is not None:
                self._tokens.level = min(self._tokens.capacity, self._tokens.level - delta)


def _now() -> float:
    """The running loop's clock (``time.monotonic`` for asyncio's loops; virtual in tests)."""
    return asyncio.get_running_loop().time()


class RateLimits:
    """Limits configured per provider (and optionally per model); one limiter per key."""

    def __init__(self) -> None:
        self._config: dict[tuple[str, str | None], tuple[float | None, float | None]] = {}
        self._limiters: dict[tuple[str, str], RateLimiter] = {}

    def configure(self, provider: str, *, rpm: float | None = None, tpm: float | None = None,
                  model: str | None = None) -> None:
        """Limit each model of ``provider`` (or just ``model``) to ``rpm`` / ``tpm``."""
        self._config[(provider, model)] = (rpm, tpm)
        for key in [k for k in self._limiters if k[0] == provider
                    and (model is None or k[1] == model)]:
            del self._limiters[key]

    def limiter(self, provider: str, model: str) -> RateLimiter:
        """The shared limiter of ``(provider, model)``."""
        key = (provider, model)
        found = self._limiters.get(key)
        if found is None:
            rpm, tpm = self._config.get(key) or self._config.get((provider, None)) or (None, None)
            found = self._limiters[key] = RateLimiter(rpm, tpm)
        return found

    async def acquire(self, provider: str, model: str, tokens: int = 0) -> Permit:
        return await self.limiter(provider, model).acquire(tokens)


#: The process-wide registry providers use unless given their own.
RATE_LIMITS = RateLimits()
