"""Served runs on a Dask cluster (``cellwire serve --dask ADDRESS``).

A run is a Dask task: a worker runs it through its process's runner, with the served runs'
policies (public network only unless allowed, no local file but uploads), and stores it in
the server's store (the workers must see the store's file, as ``cellwire map`` on Dask does).
Its events come back through a ``distributed.Queue`` named after the run, so the server's
stream, reconnects and blocking answers work as for a local run; stop is a
``distributed.Event`` the worker waits on. A paused run's answer resumes it in the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from cellwire.engine import Runtime
from cellwire.engine.events import Event
from cellwire.engine.layers import Threaded
from cellwire.model import Workflow
from cellwire.services.files import FolderPolicy
from cellwire.services.http.guard import NetworkPolicy

#: Seconds between looks at a remote run's task while its event queue is quiet.
POLL = 0.5


def queue_name(run_id: str) -> str:
    return f"cellwire-events-{run_id}"


def stop_name(run_id: str) -> str:
    return f"cellwire-stop-{run_id}"


@dataclass(frozen=True)
class RemoteRun:
    """What a worker needs to run one served run."""

    run_id: str
    workflow: Workflow
    inputs: dict[str, Any]
    db: str
    uploads: str
    allow_private_network: bool


@dataclass(frozen=True)
class RemoteOutcome:
    """How a remote run ended (its events said the rest)."""

    status: str
    answer: str


def run_remote(spec: RemoteRun) -> RemoteOutcome:
    """A Dask task: run ``spec`` on this worker, its events put on the run's queue."""
    from distributed import Event as StopEvent
    from distributed import Queue, get_client

    from cellwire.runner import default_runner

    client = get_client()
    events = Queue(queue_name(spec.run_id), client=client)
    stop = StopEvent(stop_name(spec.run_id), client=client)
    network = (NetworkPolicy.trusted() if spec.allow_private_network
               else NetworkPolicy.untrusted())
    base = Runtime(network=network, files=FolderPolicy(spec.uploads))
    # The run's loop never waits for the scheduler: a thread of the layer puts the events.
    forward = Threaded(events.put, name=f"cellwire-forward-{spec.run_id[:8]}")
    handle = default_runner().submit(spec.workflow, spec.inputs, run_id=spec.run_id,
                                     store=spec.db, runtime=base, layers=[forward])

    def stop_when_asked() -> None:
        stop.wait()
        if not handle.done:
            handle.stop("stopped by the API caller")

    threading.Thread(target=stop_when_asked, daemon=True).start()
    try:
        result = handle.wait()
    finally:
        events.put(None)  # the end of the run's events
        stop.set()  # lets the stop thread go
    return RemoteOutcome(str(result.status), result.answer)


class RemoteHandle:
    """A run on the cluster, as the server's run registry holds it."""

    def __init__(self, run_id: str, task: asyncio.Task[RemoteOutcome],
                 stop: Callable[[], Any]):
        self.run_id = run_id
        self.task = task
        self._stop = stop

    @property
    def done(self) -> bool:
        return self.task.done()

    def stop(self, reason: str = "stopped by the user") -> None:
        self._stop()

    def __await__(self) -> Generator[Any, None, RemoteOutcome]:
        return self.task.__await__()


class DaskRuns:
    """Starts served runs on the Dask scheduler at ``address``."""

    def __init__(self, address: str, *, db: str, uploads: str,
                 allow_private_network: bool = False):
        self.address = address
        self.db = db
        self.uploads = uploads
        self.allow_private_network = allow_private_network
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                from distributed import Client

                self._client = await Client(self.address, asynchronous=True)
            return self._client

    def start(self, workflow: Workflow, inputs: dict[str, Any], run_id: str,
              feed: Callable[[Event], None]) -> RemoteHandle:
        """Submit the run; its events go to ``feed`` on this loop as they arrive."""
        spec = RemoteRun(run_id, workflow, inputs, self.db, self.uploads,
                         self.allow_private_network)
        task = asyncio.get_running_loop().create_task(self._run(spec, feed))
        return RemoteHandle(run_id, task, lambda: asyncio.ensure_future(self._stop(run_id)))

    async def _run(self, spec: RemoteRun, feed: Callable[[Event], None]) -> RemoteOutcome:
        from distributed import Queue

        client = await self.client()
        # Created on the scheduler before the task can put anything on it.
        events = await Queue(queue_name(spec.run_id), client=client)
        future = client.submit(run_remote, spec, key=f"cellwire-run-{spec.run_id}",
                               pure=False)
        while True:
            try:
                item = await events.get(timeout=POLL)
            except TimeoutError:
                if future.done() and future.status != "finished":
                    break  # the task failed before it could say it ended
                continue
            if item is None:
                break
            feed(item)
        outcome: RemoteOutcome = await future
        return outcome

    async def _stop(self, run_id: str) -> None:
        from distributed import Event as StopEvent

        await StopEvent(stop_name(run_id), client=await self.client()).set()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


__all__ = ["DaskRuns", "RemoteHandle", "RemoteOutcome", "RemoteRun", "run_remote"]
