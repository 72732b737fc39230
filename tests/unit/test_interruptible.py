"""Blocking code on kept daemon threads: reused between calls, never after an interrupt."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cellwire.engine.interruptible import run_interruptible


async def test_calls_run_off_the_loop_on_a_reused_thread():
    loop_thread = threading.get_ident()
    first = await run_interruptible(threading.get_ident)
    second = await run_interruptible(threading.get_ident)
    assert first != loop_thread
    assert first == second  # the idle thread took the next call


async def test_errors_reach_the_awaiting_task():
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await run_interruptible(fail)
    assert await run_interruptible(lambda: 42) == 42


async def test_concurrent_calls_get_threads_of_their_own():
    started = threading.Barrier(3, timeout=10)

    def meet() -> int:
        started.wait()  # all three run at once, or the barrier breaks
        return threading.get_ident()

    idents = await asyncio.gather(*(run_interruptible(meet) for _ in range(3)))
    assert len(set(idents)) == 3


async def test_an_interrupted_thread_ends_and_is_not_reused():
    seen: list[threading.Thread] = []

    def spin() -> None:
        seen.append(threading.current_thread())
        while True:
            pass

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await run_interruptible(spin)
    deadline = time.monotonic() + 10
    while seen[0].is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not seen[0].is_alive()
    assert await run_interruptible(threading.current_thread) is not seen[0]
