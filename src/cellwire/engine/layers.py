"""Layers: what sees a run from outside (the store, the editor, OpenTelemetry, progress).

A layer has three hooks: ``on_run_start`` before the run's first event, ``on_event`` for every
event (the run's start and end events included), and ``on_run_end`` with the finished
:class:`~cellwire.engine.RunResult`, which may return an awaitable the run waits for (the store
waits until the run is on disk). The executor isolates them: a layer that raises is reported
once, in the result's ``warnings``, and gets nothing more from that run; the run goes on.

Events are already redacted when a layer sees them. ``on_event`` runs on the event loop, so it
must be quick; a slow consumer wraps itself in :class:`Threaded`, which hands events to a
thread of its own through a bounded queue.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .events import Event, RunStarted

if TYPE_CHECKING:
    from .result import RunResult


class Layer:
    """Override the hooks you need; each default does nothing."""

    #: A layer that keeps runs: when it fails, the result says the run was not stored.
    persists: ClassVar[bool] = False

    def on_run_start(self, event: RunStarted) -> None:
        """The run is about to start (its ``RunStarted`` event follows)."""

    def on_event(self, event: Event) -> None:
        """One event of the run; keep it fast (it runs on the event loop)."""

    def on_run_end(self, result: RunResult) -> Awaitable[None] | None:
        """The run ended; an awaitable returned here is awaited before the run returns."""
        return None


class Callback(Layer):
    """A plain ``callback(event)`` as a layer."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[Event], None]):
        self.callback = callback

    def on_event(self, event: Event) -> None:
        self.callback(event)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Callback) and other.callback == self.callback

    def __hash__(self) -> int:
        return hash(self.callback)

    def __repr__(self) -> str:
        return f"Callback({self.callback!r})"


def as_layer(item: Layer | Callable[[Event], None]) -> Layer:
    """``item`` itself when it is a layer, else the callback wrapped as one."""
    if isinstance(item, Layer):
        return item
    if callable(item):
        return Callback(item)
    raise TypeError(f"{item!r} is neither a Layer nor a callable taking events")


_STOP = object()


class Threaded(Layer):
    """``layer`` on a thread of its own: the event loop only puts events on a queue.

    At most ``maxsize`` events wait; past that, events are dropped (the loop must never wait
    for a slow consumer), and the run's result says how many. ``on_run_end`` waits, off the
    loop, until the thread has delivered everything before it.
    """

    def __init__(self, layer: Layer | Callable[[Event], None], *, maxsize: int = 100_000,
                 name: str | None = None):
        self.layer = as_layer(layer)
        self.persists = self.layer.persists  # type: ignore[misc]
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._deliver, daemon=True,
                                        name=name or f"cellwire-layer-{type(self.layer).__name__}")
        self._thread.start()

    def __repr__(self) -> str:
        return f"Threaded({self.layer!r})"

    def on_run_start(self, event: RunStarted) -> None:
        self._put(("start", event), event.run_id)

    def on_event(self, event: Event) -> None:
        self._put(("event", event), event.run_id)

    def on_run_end(self, result: RunResult) -> Awaitable[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Blocks only if the queue is full: the end of a run is never dropped.
        self._queue.put(("end", result, done))
        return self._finished(done, result.run_id)

    async def _finished(self, done: asyncio.Future[None], run_id: str) -> None:
        await done
        with self._lock:
            dropped = self._dropped.pop(run_id, 0)
        if dropped:
            raise RuntimeError(f"{dropped} event(s) were dropped: the layer could not keep up")

    def close(self) -> None:
        """Deliver what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _put(self, item: tuple[Any, ...], run_id: str) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._dropped[run_id] = self._dropped.get(run_id, 0) + 1

    def _deliver(self) -> None:
        failures: dict[str, BaseException] = {}
        while (item := self._queue.get()) is not _STOP:
            kind = item[0]
            if kind == "end":
                result, done = item[1], item[2]
                error = failures.pop(result.run_id, None)
                if error is None:
                    try:
                        waited = self.layer.on_run_end(result)
                        if waited is not None:
                            _wait(waited)
                    except Exception as exc:  # noqa: BLE001 - reported through the run's result
                        error = exc
                _settle(done, error)
                continue
            event = item[1]
            if event.run_id in failures:
                continue
            try:
                if kind == "start":
                    self.layer.on_run_start(event)
                else:
                    self.layer.on_event(event)
            except Exception as exc:  # noqa: BLE001 - reported once, at the run's end
                failures[event.run_id] = exc


def _wait(awaitable: Awaitable[None]) -> None:
    async def wait() -> None:
        await awaitable

    asyncio.run(wait())


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    loop = done.get_loop()

    def settle() -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    if not loop.is_closed():
        loop.call_soon_threadsafe(settle)
