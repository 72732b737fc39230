"""The engine's only source of time, so tests can replace it."""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Wall time for timestamps, the event loop's time for durations and sleeping.

    Durations come from the running loop, so a test loop with virtual time (``looptime``)
    makes retries, backoff and timeouts instant and exact.
    """

    def now(self) -> float:
        """Seconds since the epoch, for timestamps."""
        return time.time()

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
