"""Blocking code on a daemon thread that a cancelled await interrupts.

``loop.run_in_executor`` threads cannot be stopped, and interpreter shutdown waits for them:
a node that timed out while its code loops forever would keep the process alive. Here the
thread is a daemon (it never holds up exit), and when the awaiting task is cancelled (a node
timeout, a stopped run) an :class:`Interrupted` exception is raised inside it, which ends
pure-Python loops at their next bytecode. Code blocked in C (``time.sleep``, a socket read)
sees it when the call returns; the thread holds nothing up meanwhile.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Interrupted(BaseException):
    """Raised inside a thread whose awaiting task was cancelled; a BaseException, so code
    that catches ``Exception`` does not swallow it."""


async def run_interruptible(fn: Callable[..., T], /, *args: Any) -> T:
    """``fn(*args)`` on a daemon thread; cancelling the await interrupts the thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(*args), None)
        except Interrupted:
            return  # nobody awaits it any more
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (None, exc)
        except BaseException as exc:  # noqa: BLE001 - never end the loop's thread with it
            outcome = (None, RuntimeError(f"{type(exc).__name__} escaped a worker thread"))
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop closed meanwhile

    thread = threading.Thread(target=target, name="cellwire-code", daemon=True)
    thread.start()
    try:
        return await future
    except asyncio.CancelledError:
        interrupt(thread)
        raise


def interrupt(thread: threading.Thread) -> None:
    """Raise :class:`Interrupted` in ``thread`` at its next bytecode (if it still runs)."""
    ident = thread.ident
    if ident is None or not thread.is_alive():
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                               ctypes.py_object(Interrupted))
