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
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from .events import Event, RunStarted

if TYPE_CHECKING:
    from .result import RunResult


#: How long the end of a run waits for a layer's ``on_run_end``, unless the layer says.
DEFAULT_END_TIMEOUT = 10.0


class Layer:
    """Override the hooks you need; each default does nothing."""

    #: A layer that keeps runs: when it fails, the result says the run was not stored.
    persists: ClassVar[bool] = False
    #: Seconds the run waits for what ``on_run_end`` returns before it reports the layer as
    #: failed; None: the awaitable bounds itself (the store waits for its own store timeout).
    end_timeout: float | None = DEFAULT_END_TIMEOUT

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
        self.end_timeout = self.layer.end_timeout
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


class LayerError(RuntimeError):
    """A layer's failure whose message already says what happened and what to do about it
    (reports show it as it is, without the exception's type)."""


def layer_name(layer: Layer) -> str:
    """How reports name a layer: the callback's name, the wrapped layer's, or the class."""
    if isinstance(layer, Threaded):
        return layer_name(layer.layer)
    if isinstance(layer, Callback):
        callback = layer.callback
        return getattr(callback, "__qualname__", None) or type(callback).__name__
    return type(layer).__name__


class RunLayers:
    """The layers of one run, isolated from the run and from each other.

    A hook that raises (or an ``on_run_end`` awaitable that raises or outlives the layer's
    ``end_timeout``) is reported once in :attr:`warnings`; that layer then gets nothing more
    from the run. A failing layer with ``persists`` also lands in :attr:`store_errors`.
    """

    __slots__ = ("_hooks", "_live", "_persisting", "store_errors", "warnings")

    def __init__(self, items: Iterable[Layer | Callable[[Event], None]]):
        self._live: list[Layer] = [as_layer(item) for item in items]
        #: (layer, its event hook): a plain callback is called directly, saving a call per event.
        self._hooks: tuple[tuple[Layer, Callable[[Event], None]], ...] = tuple(
            (layer, layer.callback if type(layer) is Callback else layer.on_event)
            for layer in self._live
        )
        self._persisting = any(layer.persists for layer in self._live)
        self.warnings: list[str] = []
        self.store_errors: list[str] = []

    @property
    def stored(self) -> bool | None:
        """True when every persisting layer kept the run, False when one failed, None when
        the run has no persisting layer."""
        return (not self.store_errors) if self._persisting else None

    def start(self, event: RunStarted) -> None:
        for layer in list(self._live):
            try:
                layer.on_run_start(event)
            except Exception as exc:  # noqa: BLE001 - a layer never fails the run
                self._failed(layer, "on_run_start", exc)

    def event(self, event: Event) -> None:
        for layer, hook in self._hooks:
            try:
                hook(event)
            except Exception as exc:  # noqa: BLE001 - a layer never fails the run
                self._failed(layer, "on_event", exc)

    async def end(self, result: RunResult) -> None:
        """Call every ``on_run_end`` and wait, concurrently, for what they return."""
        waits = [(layer, waited) for layer, waited in self._end_hooks(result)
                 if waited is not None]
        if waits:
            await asyncio.gather(*(self._wait(layer, waited) for layer, waited in waits))

    def end_nowait(self, result: RunResult) -> None:
        """Call every ``on_run_end`` without waiting (the run's task is being cancelled)."""
        for _, waited in self._end_hooks(result):
            if inspect.iscoroutine(waited):
                waited.close()
            elif isinstance(waited, asyncio.Future):
                # Retrieve the outcome later, so asyncio logs no "never retrieved" error.
                waited.add_done_callback(_consume)

    def _end_hooks(self, result: RunResult) -> list[tuple[Layer, Awaitable[None] | None]]:
        called = []
        for layer in list(self._live):
            try:
                called.append((layer, layer.on_run_end(result)))
            except Exception as exc:  # noqa: BLE001 - a layer never fails the run
                self._failed(layer, "on_run_end", exc)
        return called

    async def _wait(self, layer: Layer, waited: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(layer.end_timeout):
                await waited
        except TimeoutError:
            self._failed(layer, "on_run_end", None,
                         f"did not finish within its end_timeout of {layer.end_timeout:g} s")
        except Exception as exc:  # noqa: BLE001 - a layer never fails the run
            self._failed(layer, "on_run_end", exc)

    def _failed(self, layer: Layer, hook: str, exc: Exception | None, why: str = "") -> None:
        if not any(live is layer for live in self._live):
            return
        self._live = [live for live in self._live if live is not layer]
        self._hooks = tuple(pair for pair in self._hooks if pair[0] is not layer)
        why = why or _describe(exc)
        self.warnings.append(f"layer {layer_name(layer)!r} failed in {hook}: {why}; it got "
                             "nothing more from this run")
        if layer.persists:
            self.store_errors.append(why)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    text = str(exc)
    if isinstance(exc, LayerError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
