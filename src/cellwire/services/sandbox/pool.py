"""Warm workers of one kind, each serving one run at a time.

Workers start on demand up to ``size``; a worker that served ``max_runs`` runs, or whose run
failed in a way that may have hurt it (a timeout, a death), is killed, and a replacement
starts in the background so that ``warm`` workers stay ready. A start is never cancelled
halfway (bubblewrap would be left half set up): a run cancelled while its worker starts
leaves the worker to the idle ones. All of it lives on one event loop (the sandbox's own).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .worker import Worker


class Pool:
    """``acquire`` a worker, then ``release`` it after a clean run or ``discard`` it."""

    def __init__(self, spawn: Callable[[], Awaitable[Worker]], *, size: int, max_runs: int,
                 warm: int):
        self._spawn = spawn
        self._size = size
        self._max_runs = max_runs
        self._warm = min(warm, size)
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._starting: set[asyncio.Task[Worker]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._closed = False

    @property
    def _count(self) -> int:
        return len(self._all) + len(self._starting)

    async def acquire(self) -> Worker:
        """An idle worker, a new one if there is room, else the next one released."""
        while True:
            if self._closed:
                raise RuntimeError("the sandbox is closed")
            while self._idle:
                worker = self._idle.pop()
                if worker.alive:
                    self.prestart()  # the next run finds one ready
                    return worker
                self._forget(worker)
            if self._count < self._size:
                start = self._start()
                try:
                    return await asyncio.shield(start)
                except asyncio.CancelledError:
                    start.add_done_callback(self._keep_idle)
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def release(self, worker: Worker) -> None:
        """Back to the idle workers after a clean run (or retired after ``max_runs``)."""
        worker.runs += 1
        if (worker.alive and not worker.retiring and worker.runs < self._max_runs
                and not self._closed):
            self._idle.append(worker)
            self._wake()
        else:
            self.discard(worker)

    def discard(self, worker: Worker) -> None:
        """Kill ``worker`` and start a replacement in the background."""
        self._forget(worker)
        if not self._closed:
            self.prestart()

    def prestart(self) -> None:
        """Start workers in the background until ``warm`` are idle or starting."""
        while self._count < self._size and len(self._idle) + len(self._starting) < self._warm:
            self._start().add_done_callback(self._keep_idle)

    async def close(self) -> None:
        """Kill every worker, idle or busy, once the ones starting are up; start no more."""
        self._closed = True
        await asyncio.gather(*self._starting, return_exceptions=True)
        workers = list(self._all)
        self._all.clear()
        self._idle.clear()
        await asyncio.gather(*(w.close() for w in workers), *self._closing,
                             return_exceptions=True)
        self._wake()

    def kill_all(self) -> None:
        """:meth:`close` for a caller that cannot wait: kill every worker now."""
        self._closed = True
        for start in list(self._starting):
            start.cancel()
        for worker in self._all:
            worker.kill()
        self._all.clear()
        self._idle.clear()
        self._wake()

    def _start(self) -> asyncio.Task[Worker]:
        start = asyncio.ensure_future(self._launch())
        self._starting.add(start)
        start.add_done_callback(self._started)
        return start

    async def _launch(self) -> Worker:
        worker = await self._spawn()
        if self._closed:
            await worker.close()
            raise RuntimeError("the sandbox is closed")
        self._all.add(worker)
        return worker

    def _started(self, start: asyncio.Task[Worker]) -> None:
        self._starting.discard(start)
        self._wake()

    def _keep_idle(self, start: asyncio.Task[Worker]) -> None:
        # A start nobody waits for: its worker joins the idle ones; a failed start shows on
        # the next acquire, which starts another.
        if start.cancelled() or start.exception() is not None:
            return
        self._idle.append(start.result())
        self._wake()

    def _forget(self, worker: Worker) -> None:
        self._all.discard(worker)
        worker.kill()
        closing = asyncio.ensure_future(worker.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
