"""Best and median seconds of one invocation, after a short warm-up: how the benchmarks that
compare cellwire with a peer time each side the same way (imported as a sibling module)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable


def best_and_median(invoke: Callable[[], object], repeat: int) -> tuple[float, float]:
    for _ in range(max(1, repeat // 10)):
        invoke()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        invoke()
        samples.append(time.perf_counter() - t0)
    return min(samples), statistics.median(samples)


async def abest_and_median(invoke: Callable[[], Awaitable[object]],
                           repeat: int) -> tuple[float, float]:
    for _ in range(max(2, repeat // 10)):
        await invoke()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await invoke()
        samples.append(time.perf_counter() - t0)
    return min(samples), statistics.median(samples)
