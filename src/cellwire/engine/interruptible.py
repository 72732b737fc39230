"""Blocking code on a daemon thread that a cancelled await interrupts.

``loop.run_in_executor`` threads cannot be stopped, and interpreter shutdown waits for them:
a node that timed out while its code loops forever would keep the process alive. Here the
thread is a daemon (it never holds up exit), and when the awaiting task is cancelled (a node
timeout, a stopped run) an :class:`Interrupted` exception is raised inside it, which ends
pure-Python loops at their next bytecode. Code blocked in C (``time.sleep``, a socket read)
sees it when the call returns; the thread holds nothing up meanwhile.

The threads are kept between calls: starting one costs the event loop a wait for the new
thread to run (about half a millisecond, more when the GIL is busy), which a batch paid per
row. A thread that was interrupted is never reused: it ends, and a new one takes its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Seconds an idle thread waits for work before it ends.
IDLE_SECONDS = 30.0


class Interrupted(BaseException):
    """Raised inside a thread whose awaiting task was cancelled; a BaseException, so code
    that catches ``Exception`` does not swallow it."""


class _Job:
    __slots__ = ("args", "fn", "future", "loop")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.fn, self.args, self.loop, self.future = fn, args, loop, future


class _Worker(threading.Thread):
    """A daemon thread that runs one job at a time, handed to it by :func:`run_interruptible`."""

    def __init__(self) -> None:
        super().__init__(name="cellwire-code", daemon=True)
        self.inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._job: _Job | None = None
        self._retired = False
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            while True:
                try:
                    job = self.inbox.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    if _leave_idle(self):
                        return
                    continue  # a job was handed over meanwhile
                self._job = job
                outcome = _call(job)
                with self._lock:
                    self._job = None
                    if self._retired:
                        return  # interrupted: nobody awaits the outcome
                # Idle before the awaiting task learns the outcome, so the call it makes next
                # finds this thread rather than starting another.
                _idle_again(self)
                with contextlib.suppress(RuntimeError):  # raised when the loop closed meanwhile
                    job.loop.call_soon_threadsafe(_settle, job.future, *outcome)
        except Interrupted:
            return  # an interrupt that landed after its job ended: this thread ends all the same

    def interrupt(self, job: _Job) -> None:
        """Raise :class:`Interrupted` in this thread if it still runs ``job``; it then ends."""
        with self._lock:
            if self._job is not job or self._retired or self.ident is None:
                return
            self._retired = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.ident),
                                                       ctypes.py_object(Interrupted))


_idle: list[_Worker] = []
_idle_lock = threading.Lock()


def _forget_idle() -> None:
    # A forked child has none of its parent's threads: a job handed to one would never run.
    global _idle_lock
    _idle.clear()
    _idle_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_idle)


def _take_idle() -> _Worker:
    with _idle_lock:
        if _idle:
            return _idle.pop()
    worker = _Worker()
    worker.start()
    return worker


def _idle_again(worker: _Worker) -> None:
    with _idle_lock:
        _idle.append(worker)


def _leave_idle(worker: _Worker) -> bool:
    """Take an idle ``worker`` out of the pool; False if a job was just handed to it."""
    with _idle_lock:
        if worker in _idle:
            _idle.remove(worker)
            return True
        return False


def _call(job: _Job) -> tuple[Any, BaseException | None]:
    try:
        return job.fn(*job.args), None
    except Interrupted:
        return None, None  # nobody awaits it any more; the worker retires
    except Exception as exc:  # noqa: BLE001 - handed to the awaiting task
        return None, exc
    except BaseException as exc:  # noqa: BLE001 - never end the worker with it
        return None, RuntimeError(f"{type(exc).__name__} escaped a worker thread")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


async def run_interruptible(fn: Callable[..., T], /, *args: Any) -> T:
    """``fn(*args)`` on a daemon thread; cancelling the await interrupts the thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    job = _Job(fn, args, loop, future)
    worker = _take_idle()
    worker.inbox.put(job)
    try:
        return await future
    except asyncio.CancelledError:
        worker.interrupt(job)
        raise
