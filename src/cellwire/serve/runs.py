"""Served runs, off the request path: started through the runner, buffered for every client.

A run is a task on the server's event loop, started by the server's :class:`Runner` (the one
place runs start), so it outlives the request that started it: a streaming client may drop
and reconnect (``GET /v1/workflow/{run_id}/events``), a blocking one may time out, and the run
still ends and is stored. Each run's Dify events go to a :class:`RunBuffer` (a layer of the
run) that any number of clients read from the start. Stop goes through the runner's command
channel; a paused run's form, once answered, resumes the run into the same buffer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from cellwire.durable import prepare_respond
from cellwire.engine.events import Event, RunPaused
from cellwire.engine.forms import FormError, FormExpired
from cellwire.engine.layers import Layer
from cellwire.runner import RunHandle, Runner
from cellwire.store import RunStore
from cellwire.store.checkpoints import NotResumable

from .apps import ServedApp
from .errors import ServeError
from .events import DifyStream
from .principal import RunSlot
from .remote import DaskRuns, RemoteHandle

#: Finished runs whose events stay in memory for clients that reconnect late.
KEEP_FINISHED = 500


class RunBuffer:
    """One run's Dify events, in order, for every client that reads them."""

    def __init__(self, stream: DifyStream):
        self.stream = stream
        self.events: list[dict[str, Any]] = []
        #: ``running``, ``paused`` or ``ended``.
        self.state = "running"
        self._changed = asyncio.Event()

    def add(self, items: list[dict[str, Any]]) -> None:
        if items:
            self.events.extend(items)
            self._wake()

    def settle(self, state: str) -> None:
        self.state = state
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, *, continue_on_pause: bool = True) -> AsyncIterator[dict[str, Any]]:
        """Every event from the first, then the new ones as they come, until the run ends
        (or pauses, unless ``continue_on_pause``)."""
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            if self.state == "ended" or (self.state == "paused" and not continue_on_pause):
                return
            await changed.wait()

    def last(self, event: str) -> dict[str, Any] | None:
        for item in reversed(self.events):
            if item.get("event") == event:
                return item
        return None


class _Feed(Layer):
    """The layer that converts a run's events into its buffer (quick: on the loop)."""

    def __init__(self, buffer: RunBuffer):
        self.buffer = buffer

    def on_event(self, event: Event) -> None:
        self.buffer.add(self.buffer.stream.convert(event))
        if isinstance(event, RunPaused):
            self.buffer.state = "paused"


class ServedRun:
    """A run the server started (or resumed): its app, buffer and current handle."""

    def __init__(self, app: ServedApp, buffer: RunBuffer, handle: RunHandle | RemoteHandle):
        self.app = app
        self.buffer = buffer
        self.handle = handle

    @property
    def run_id(self) -> str:
        return self.buffer.stream.run_id

    async def wait(self) -> Any:
        """The run's end: its result (``status``, ``answer``); None when its task died."""
        try:
            return await self.handle
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the buffer says why
            return None


class RunManager:
    """Starts, finds, stops and resumes the server's runs: in this process through the
    runner, or on a Dask cluster (``dask``; a paused run's answer resumes it here)."""

    def __init__(self, runner: Runner, store: RunStore, *, trust: bool = False,
                 dask: DaskRuns | None = None):
        self.runner = runner
        self.store = store
        self.trust = trust
        self.dask = dask
        self._runs: OrderedDict[str, ServedRun] = OrderedDict()

    def start(self, app: ServedApp, inputs: Mapping[str, Any], *, user: str,
              query: str | None = None, conversation_id: str | None = None,
              files: list[Any] | None = None, slot: RunSlot | None = None) -> ServedRun:
        """Start ``app`` on the running loop; returns at once (the run goes on without us)."""
        run_id = str(uuid.uuid4())
        system: dict[str, Any] = {"sys.user_id": user, "sys.app_id": app.name,
                                  "sys.workflow_id": app.name, "sys.workflow_run_id": run_id,
                                  "sys.files": list(files or [])}
        if app.is_chat:
            system.update({"sys.query": query or "", "sys.conversation_id": conversation_id,
                           "sys.dialogue_count": 0})
        stream = DifyStream(run_id, app.workflow, mode=app.mode, user=user,
                            conversation_id=conversation_id)
        buffer = RunBuffer(stream)
        feed = _Feed(buffer)
        handle: RunHandle | RemoteHandle
        try:
            if self.dask is not None:
                handle = self.dask.start(app.workflow, {**inputs, **system}, run_id,
                                         feed.on_event)
            else:
                handle = self.runner.start(app.workflow, {**inputs, **system}, run_id=run_id,
                                           layers=[feed])
        except Exception:
            if slot is not None:
                slot.release()
            raise
        return self._track(ServedRun(app, buffer, handle), slot)

    def _track(self, run: ServedRun, slot: RunSlot | None) -> ServedRun:
        self._runs[run.run_id] = run
        self._runs.move_to_end(run.run_id)
        assert run.handle.task is not None
        run.handle.task.add_done_callback(lambda task: self._ended(run, task, slot))
        finished = [k for k, r in self._runs.items() if r.buffer.state != "running"]
        for key in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            del self._runs[key]
        return run

    @staticmethod
    def _ended(run: ServedRun, task: asyncio.Task[Any], slot: RunSlot | None) -> None:
        if slot is not None:
            slot.release()
        buffer = run.buffer
        if task.cancelled() or task.exception() is not None:
            # The engine never lets a run die silently; should it, clients hear it.
            error = "the run was cancelled" if task.cancelled() else str(task.exception())
            buffer.add([buffer.stream.error(error)])
            buffer.settle("ended")
            return
        buffer.settle("paused" if str(task.result().status) == "paused" else "ended")

    def running(self) -> list[ServedRun]:
        """The runs of this process still going."""
        return [run for run in self._runs.values() if not run.handle.done]

    def get(self, run_id: str) -> ServedRun | None:
        """The run ``run_id`` this process started (or resumed), if it still remembers it."""
        return self._runs.get(run_id)

    def stop(self, run_id: str) -> bool:
        """Stop run ``run_id`` through the runner's command channel; False when this process
        has no such run."""
        run = self._runs.get(run_id)
        if run is None:
            return False
        if not run.handle.done:
            # The run's command channel (a Dask run: the event its worker waits on).
            run.handle.stop("stopped by the API caller")
        return True

    async def answer(self, token: str, action: str, values: Mapping[str, Any] | None,
                     apps: Mapping[str, ServedApp]) -> ServedRun:
        """Answer the form whose token is ``token`` and resume its run; the resumed run's
        events go on in the run's buffer (a new one when this process did not start it)."""
        try:
            stored = await asyncio.to_thread(self.store.form, token)
        except KeyError:
            raise ServeError(404, "not_found", "Form not found") from None
        form = stored.form
        if stored.status != "waiting":
            raise ServeError(412, "human_input_form_submitted",
                             "the form was already submitted")
        if form.expired(time.time()):
            raise ServeError(412, "human_input_form_expired", "the form has expired")
        try:
            workflow, options = await asyncio.to_thread(
                prepare_respond, form.run_id, action, dict(values or {}), node=form.node_id,
                runner=self.runner, store=self.store, trust=self.trust)
        except FormExpired as exc:
            raise ServeError(412, "human_input_form_expired", str(exc)) from None
        except (FormError, NotResumable) as exc:
            raise ServeError(400, "invalid_param", str(exc)) from None
        previous = self._runs.get(form.run_id)
        if previous is not None:
            if not previous.handle.done:
                # A run that paused on a Dask worker ends its task there when the server has
                # read its last event; resuming first let that end land after the resumed
                # run's events and leave the stream waiting.
                await previous.handle
            app, buffer = previous.app, previous.buffer
        else:
            app = apps.get(workflow.name) or next(iter(apps.values()))
            saved = await asyncio.to_thread(self.store.run, form.run_id)
            inputs = saved.get("inputs") or {}
            buffer = RunBuffer(DifyStream(form.run_id, app.workflow, mode=app.mode,
                                          user=str(inputs.get("sys.user_id") or ""),
                                          conversation_id=inputs.get("sys.conversation_id")))
        buffer.settle("running")
        handle = self.runner.start(workflow, None, layers=[_Feed(buffer)], **options)
        return self._track(ServedRun(app, buffer, handle), None)


def new_conversation_id() -> str:
    return str(uuid.uuid4())


__all__ = ["KEEP_FINISHED", "RunBuffer", "RunManager", "ServedRun", "new_conversation_id"]
