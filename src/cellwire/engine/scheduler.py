"""The scheduler: Dify's edge semantics over one graph level, with the run's concurrency limit.

Every edge starts undecided. A finished node takes its outgoing edges (a branch takes only
those leaving through the handle it chose) and skips the rest. A node runs once all its
incoming edges are decided and at least one was taken; a node whose incoming edges are all
skipped is skipped, and so are its outgoing edges. Everything ready runs at once, bounded by
the run's concurrency limit (:class:`Slots`).

"At once" starts a wide fan-out in batches, one per turn of the event loop, each about
:data:`SLICE` of work: a node's first step runs until it waits (an llm node: until its request
is on its way), and if two hundred first steps ran in one turn, no request could leave before
the last node had opened its connection, since a new connection is usable only a turn later.
Batches let the first requests go out while the later nodes start; nodes that finish in their
first step (templates, code) make the next batch grow, so they start in a few turns.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .context import VariablePool
from .node_runner import execute, skip
from .plan import GraphPlan
from .state import NodeStatus

if TYPE_CHECKING:
    from .executor import Execution

#: How many ready nodes start at once before the event loop gets a turn.
FIRST_BATCH = 4
#: The work a batch of starts aims at; the next batch grows or shrinks to fit it.
SLICE = 0.001


@dataclass(slots=True)
class Frame:
    """One run of a graph level: its pool, and for a container, which round."""

    container_id: str | None
    round: int | None
    pool: VariablePool
    #: The container's execution id (None at the top).
    parent_execution_id: str | None = None
    #: Set by a loop-end node: the loop stops after this round.
    break_requested: bool = False
    statuses: dict[str, NodeStatus] = field(default_factory=dict)


class GraphRun:
    """The edge states of one run of one graph level.

    A finished node decides its outgoing edges itself and carries on with the first node it
    made ready, in the same task; only further ready nodes get tasks of their own. A chain
    thus costs no event-loop round trips, while everything ready still runs at once.
    """

    __slots__ = ("active", "done", "execution", "frame", "plan", "restored", "taken", "tasks",
                 "unknown", "waiting")

    def __init__(self, execution: Execution, plan: GraphPlan, frame: Frame,
                 taken: dict[str, int] | None = None,
                 restored: dict[str, str | None] | None = None):
        self.execution = execution
        #: Nodes a resumed run finished before (their handles): decided again, never run.
        self.restored = restored
        self.plan = plan
        self.frame = frame
        self.unknown = dict(plan.in_count)
        #: Taken incoming edges per node; a partial re-run starts with some already decided.
        self.taken: dict[str, int] = taken or {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.active = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Ready nodes not started yet (see the module: wide fan-outs start in batches).
        self.waiting: deque[str] = deque()

    async def run(self) -> None:
        for node_id in self.plan.unreachable:
            skip(self.execution, node_id, self.frame)
            self._decide(node_id, None)
        self._spawn(self.plan.roots)
        try:
            await self.done
        finally:
            self.active -= len(self.waiting)
            self.waiting.clear()
            pending = [t for t in self.tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, node_ids: Sequence[str]) -> None:
        """Start a task for each of ``node_ids``: the first :data:`FIRST_BATCH` now, the rest
        in batches on the following turns of the event loop (after those already waiting)."""
        if not node_ids:
            return
        self.active += len(node_ids)
        waiting = self.waiting
        if waiting:
            waiting.extend(node_ids)
            return
        for node_id in node_ids[:FIRST_BATCH]:
            self._start(node_id)
        if len(node_ids) > FIRST_BATCH:
            waiting.extend(node_ids[FIRST_BATCH:])
            asyncio.get_running_loop().call_soon(self._next_batch, FIRST_BATCH,
                                                 time.perf_counter())

    def _next_batch(self, size: int, since: float) -> None:
        waiting = self.waiting
        if not waiting or self.done.done():
            return
        now = time.perf_counter()
        # ``since`` was the last batch: the turn in between ran its first steps.
        took = now - since
        fits = int(size * SLICE / took) if took > 0 else 8 * size
        size = max(FIRST_BATCH, min(8 * size, fits))
        for _ in range(min(size, len(waiting))):
            self._start(waiting.popleft())
        if waiting:
            asyncio.get_running_loop().call_soon(self._next_batch, size, now)

    def _start(self, node_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._chain(node_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _chain(self, node_id: str | None) -> None:
        execution = self.execution
        top = self.plan.container is None
        restored = self.restored
        try:
            while node_id is not None:
                if restored is not None and node_id in restored:
                    ready = self._decide(node_id, restored[node_id])
                else:
                    handle = await execute(execution, node_id, self.frame)
                    if handle is None:
                        break  # paused for a person: its edges wait for the answer
                    ready = self._decide(node_id, handle)
                    if top:
                        execution.state.handles[node_id] = handle
                        # In `sync` durability, nothing that depends on the node starts
                        # before its write is committed.
                        committed = execution.checkpoint(node_id, handle, bool(ready))
                        if committed is not None:
                            await committed
                node_id = ready[0] if ready else None
                self._spawn(ready[1:])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the graph's awaiter
            if not self.done.done():
                self.done.set_exception(exc)
        finally:
            self.active -= 1
            if self.active == 0 and not self.done.done():
                self.done.set_result(None)

    def _decide(self, source: str, handle: str | None) -> list[str]:
        """Decide the edges leaving ``source``; returns the nodes that became ready.

        ``handle`` None means the source was skipped, so all its edges are skipped.
        """
        unknown, taken = self.unknown, self.taken
        out_edges = self.plan.out_edges
        branching = self.execution.compiled.branching
        ready: list[str] = []
        stack: list[tuple[str, str | None]] = [(source, handle)]
        while stack:
            node_id, chosen = stack.pop()
            take_all = chosen is not None and not branching[node_id]
            for edge_handle, target in out_edges[node_id]:
                unknown[target] -= 1
                if take_all or (chosen is not None and edge_handle == chosen):
                    taken[target] = taken.get(target, 0) + 1
                if unknown[target] == 0:
                    if taken.get(target):
                        ready.append(target)
                    else:
                        skip(self.execution, target, self.frame)
                        stack.append((target, None))
        return ready


class Slots:
    """The run's concurrency limit: a counting semaphore whose fast path allocates nothing.

    (``asyncio.Semaphore`` costs two coroutine objects per acquire, which adds up to real
    garbage-collector work at tens of thousands of nodes per second.)
    """

    __slots__ = ("free", "waiters")

    def __init__(self, size: int):
        self.free = size
        self.waiters: deque[asyncio.Future[None]] = deque()

    def acquire(self) -> Any:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return _READY
        return self._wait()

    async def _wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            else:
                self.waiters.remove(future)
            raise

    def release(self) -> None:
        while self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes straight to the waiter
                return
        self.free += 1


class _Ready:
    """An awaitable that is already done: ``await`` on it costs no allocation."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


_READY = _Ready()


__all__ = ["Frame", "GraphRun", "Slots"]
