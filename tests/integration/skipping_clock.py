"""A test double of the engine's clock for retry tests: it records the waits and skips them."""

from __future__ import annotations

import asyncio

from cellwire.engine import Clock


class SkippingClock(Clock):
    """Test double of the engine's clock: records the node's retry waits and skips them."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)
