"""The engine's only source of time, so tests can replace it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Clock:
    """Wall time for timestamps, the event loop's time for durations and sleeping.

    Durations come from the running loop, so a test loop with virtual time (``looptime``)
    makes retries, backoff and timeouts instant and exact.
    """

    #: The loop last asked and where its durations come from (one tuple: threads share it).
    _source: tuple[object, Callable[[], float]] = (None, time.monotonic)

    def now(self) -> float:
        """Seconds since the epoch, for timestamps."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on the running loop's clock, for durations."""
        loop = asyncio.get_running_loop()
        source = self._source
        if source[0] is not loop:
            # uvloop's loop.time() is libuv's: whole milliseconds, read once a turn of the
            # loop. Its durations come from the system's monotonic clock instead.
            uv = type(loop).__module__.startswith("uvloop")
            source = self._source = (loop, time.monotonic if uv else loop.time)
        return source[1]()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
