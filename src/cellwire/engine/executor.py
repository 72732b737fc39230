"""The asyncio executor: Dify's edge semantics over a compiled graph.

Every edge starts undecided. A finished node takes its outgoing edges (a branch takes only
those leaving through the handle it chose) and skips the rest. A node runs once all its
incoming edges are decided and at least one was taken; a node whose incoming edges are all
skipped is skipped, and so are its outgoing edges. Everything ready runs at once, bounded by
the run's concurrency limit.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import uuid
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cellwire.model import FAIL_BRANCH, SOURCE, Node, NodeType, Workflow, WorkflowError, registry
from cellwire.model.validate import graph_roots, missing_inputs, validate_configs

from .context import VariablePool
from .events import (
    Event,
    NodeException,
    NodeFailed,
    NodeRetry,
    NodeSkipped,
    NodeStarted,
    NodeStopped,
    NodeSucceeded,
    RunFailed,
    RunPartialSucceeded,
    RunStarted,
    RunStopped,
    RunSucceeded,
    StreamChunk,
)
from .node import NodeContext, NodeError, NodeResult, Usage
from .result import RunResult
from .retry import is_retryable, retry_delay
from .runtime import Runtime
from .secrets import environment_values, redact, redact_event, secret_values
from .state import NodeStatus, RunStatus, check_node_move, check_run_move

DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_STEPS = 10_000
DEFAULT_MAX_TIME = 1200.0


class NodeFailure(Exception):
    """A node failed and its error strategy is ``fail``: the graph it is in stops."""

    def __init__(self, node_id: str, error: str, error_type: str):
        self.node_id = node_id
        self.error = error
        self.error_type = error_type
        super().__init__(f"node '{node_id}' failed: {error}")


class RunLimitExceeded(Exception):
    pass


@dataclass(slots=True)
class GraphPlan:
    """One level of the graph (the top, or the inside of one container), precomputed."""

    container: str | None
    roots: tuple[str, ...]
    in_count: dict[str, int]
    out_edges: dict[str, tuple[tuple[str, str], ...]]  # node -> ((handle, target), ...)
    unreachable: tuple[str, ...]


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


class CompiledWorkflow:
    """A validated workflow with parsed configs and graph plans, ready to run many times."""

    def __init__(self, workflow: Workflow):
        problems, configs = validate_configs(workflow)
        errors = [p for p in problems if p.level == "error"]
        if errors:
            raise WorkflowError(errors, f"workflow {workflow.name!r} is not valid")
        self.workflow = workflow
        self.nodes: dict[str, Node] = dict(workflow.nodes)
        self.types: dict[str, NodeType] = {n: registry.get(v.type) for n, v in self.nodes.items()}
        self.configs: dict[str, Any] = configs
        self.branching: dict[str, bool] = {
            n: self.types[n].handles is not None or v.error_strategy == "fail-branch"
            for n, v in self.nodes.items()
        }
        containers = [n for n, t in self.types.items() if t.container]
        self.graphs: dict[str | None, GraphPlan] = {
            c: self._plan(c) for c in [None, *containers]
        }

    def _plan(self, container: str | None) -> GraphPlan:
        members = [n.id for n in self.workflow.children(container)]
        member_set = set(members)
        in_count = dict.fromkeys(members, 0)
        out: dict[str, list[tuple[str, str]]] = {n: [] for n in members}
        for edge in self.workflow.edges:
            if edge.source in member_set and edge.target in member_set:
                out[edge.source].append((edge.source_handle, edge.target))
                in_count[edge.target] += 1
        roots = tuple(graph_roots(self.workflow, container, self.types))
        unreachable = tuple(n for n in members if in_count[n] == 0 and n not in roots)
        return GraphPlan(container, roots, in_count, {k: tuple(v) for k, v in out.items()},
                         unreachable)

    def start_inputs(self) -> list[dict[str, Any]]:
        return [
            var
            for n in self.graphs[None].roots
            if self.nodes[n].type == "start"
            for var in self.nodes[n].config.get("variables") or []
        ]

    async def run(self, inputs: Mapping[str, Any] | None = None, *,
                  runtime: Runtime | None = None, **options: Any) -> RunResult:
        """Run once; see :class:`Execution` for the options."""
        return await Execution(self, inputs or {}, runtime or Runtime(), **options).run()


class Execution:
    """One run of a compiled workflow. ``stop()`` cancels it; it then ends ``stopped``."""

    def __init__(
        self,
        compiled: CompiledWorkflow,
        inputs: Mapping[str, Any],
        runtime: Runtime,
        *,
        run_id: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_time: float | None = DEFAULT_MAX_TIME,
        conversation: dict[str, Any] | None = None,
        start_at: str | None = None,
        previous: RunResult | None = None,
        single: bool = False,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.compiled = compiled
        self.inputs = dict(inputs)
        self.runtime = runtime
        self.run_id = run_id or uuid.uuid4().hex
        self.max_steps = max_steps
        self.max_time = max_time
        self.status = RunStatus.PENDING
        self.steps = 0
        self.exceptions = 0
        self.outputs: dict[str, Any] = {}
        self.answer: list[str] = []
        self.events: list[Event] = []
        self.usage = Usage()
        self._slots = _Slots(concurrency)
        self._task: asyncio.Task[Any] | None = None
        self._stop_reason: str | None = None
        self._conversation = conversation
        if start_at is not None:
            if previous is None:
                raise ValueError("start_at needs the previous run whose outputs it reuses")
            if compiled.nodes.get(start_at) is None or compiled.nodes[start_at].parent is not None:
                raise ValueError(f"start_at={start_at!r} is not a top-level node of the workflow")
        if single and start_at is None:
            raise ValueError("single runs the start_at node alone: give start_at")
        self._start_at = start_at
        #: Stop after ``start_at``: what follows it is not run (it keeps its previous results).
        self._single = single
        self._previous = previous
        self._emitters = (self.events.append, *runtime.sinks)
        self._env = environment_values(compiled.workflow, runtime.environ)
        #: Secret values of this run; when there are any, every event is redacted first.
        self._secrets = secret_values(compiled.workflow, self._env)

    # -- events --------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if self._secrets:
            event = redact_event(event, self._secrets)
        if type(event) is StreamChunk and event.node_type == "answer":
            self.answer.append(event.text)
        for sink in self._emitters:
            sink(event)

    def _move(self, new: RunStatus) -> None:
        self.status = check_run_move(self.status, new)

    # -- the run -------------------------------------------------------------------------

    def stop(self, reason: str = "stopped by the user") -> None:
        """Cancel the run: in-flight nodes are cancelled and the run ends ``stopped``."""
        if self._task is not None and not self._task.done() and self._stop_reason is None:
            self._stop_reason = reason
            self._task.cancel(reason)

    async def run(self) -> RunResult:
        self._task = asyncio.current_task()
        clock = self.runtime.clock
        started = clock.now()
        t0 = clock.monotonic()
        system, start_inputs = _split_inputs(self.inputs)
        self._move(RunStatus.RUNNING)
        self.emit(RunStarted(run_id=self.run_id, time=started, workflow=self.compiled.workflow.name,
                             inputs=self.inputs))
        error: str | None = None
        error_node: str | None = None
        try:
            problems = missing_inputs(self.compiled.workflow, start_inputs)
            if problems:
                raise WorkflowError(problems, "the run cannot start")
            pool = self._initial_pool(system, start_inputs)
            top = Frame(None, None, pool)
            async with asyncio.timeout(self.max_time):
                if self._start_at is None:
                    await self._run_graph(self.compiled.graphs[None], top)
                else:
                    await self._run_downstream(top)
        except NodeFailure as exc:
            error, error_node = str(exc), exc.node_id
        except WorkflowError as exc:
            error = str(exc)
        except RunLimitExceeded as exc:
            error = str(exc)
        except TimeoutError:
            error = f"the run took longer than max_time={self.max_time} s"
        except asyncio.CancelledError:
            if self._stop_reason is None:
                self._finish_stopped(started, "cancelled")
                raise
            # Our own stop(): the cancellation ends here and the run reports `stopped`.
            self._task.uncancel()
        if self._stop_reason is not None:
            return self._finish_stopped(started, self._stop_reason, clock.monotonic() - t0)
        elapsed = clock.monotonic() - t0
        if error is not None:
            self._move(RunStatus.FAILED)
            self.emit(RunFailed(run_id=self.run_id, time=clock.now(), error=error,
                                node_id=error_node, exceptions_count=self.exceptions))
        elif self.exceptions:
            self._move(RunStatus.PARTIAL_SUCCEEDED)
            self.emit(RunPartialSucceeded(run_id=self.run_id, time=clock.now(),
                                          outputs=self.outputs, exceptions_count=self.exceptions))
        else:
            self._move(RunStatus.SUCCEEDED)
            self.emit(RunSucceeded(run_id=self.run_id, time=clock.now(), outputs=self.outputs))
        return self._result(started, elapsed, error, error_node)

    def _finish_stopped(self, started: float, reason: str, elapsed: float = 0.0) -> RunResult:
        self._move(RunStatus.STOPPED)
        self.emit(RunStopped(run_id=self.run_id, time=self.runtime.clock.now(), reason=reason))
        return self._result(started, elapsed, reason, None)

    def _result(self, started: float, elapsed: float, error: str | None,
                error_node: str | None) -> RunResult:
        secrets = self._secrets
        return RunResult(
            run_id=self.run_id,
            workflow=self.compiled.workflow.name,
            status=self.status,
            inputs=redact(self.inputs, secrets),
            outputs=redact(self.outputs, secrets),
            answer="".join(self.answer),
            error=redact(error, secrets),
            error_node=error_node,
            started_at=started,
            elapsed_ms=elapsed * 1000,
            usage=self.usage,
            exceptions_count=self.exceptions,
            events=self.events,
        )

    def _initial_pool(self, system: dict[str, Any], start_inputs: dict[str, Any]) -> VariablePool:
        workflow = self.compiled.workflow
        conversation = self._conversation
        if conversation is None:
            conversation = {v.name: v.value for v in workflow.conversation_variables}
        data: dict[str, dict[str, Any]] = {
            "sys": {
                "workflow_id": workflow.name,
                "workflow_run_id": self.run_id,
                "timestamp": int(self.runtime.clock.now()),
                "files": [],
                **system,
            },
            "env": self._env,
            "conversation": conversation,
        }
        for root in self.compiled.graphs[None].roots:
            if self.compiled.nodes[root].type == "start":
                # The start node reads its inputs from its own slot, as in Dify.
                data[root] = dict(start_inputs)
        return VariablePool(data)

    # -- one graph level -------------------------------------------------------------------

    async def _run_graph(self, plan: GraphPlan, frame: Frame) -> None:
        await _GraphRun(self, plan, frame).run()

    async def _run_downstream(self, frame: Frame) -> None:
        """Run ``start_at`` and what follows it (only ``start_at`` when ``single``), reusing
        the previous run for the rest.

        Nodes upstream of ``start_at`` keep their previous outputs and are not run; an edge
        from such a node into the re-run part is decided as the previous run decided it.
        """
        previous = self._previous
        assert previous is not None and self._start_at is not None
        handles: dict[str, str | None] = {}
        for event in previous.events:
            if isinstance(event, (NodeSucceeded, NodeException)) and event.parent_id is None:
                frame.pool.set_outputs(event.node_id, event.outputs)
                handles[event.node_id] = event.handle
        self.outputs.update(previous.outputs)
        plan = self.compiled.graphs[None]
        downstream = {self._start_at}
        todo = [] if self._single else [self._start_at]
        while todo:
            for _, target in plan.out_edges[todo.pop()]:
                if target not in downstream:
                    downstream.add(target)
                    todo.append(target)
        in_count = dict.fromkeys(downstream, 0)
        taken: dict[str, int] = {}
        branching = self.compiled.branching
        for source, edges in plan.out_edges.items():
            for edge_handle, target in edges:
                if target not in downstream or target == self._start_at:
                    continue
                if source in downstream:
                    in_count[target] += 1
                elif source in handles and (
                    not branching[source] or handles[source] == edge_handle
                ):
                    taken[target] = taken.get(target, 0) + 1
        sub = GraphPlan(None, (self._start_at,), in_count,
                        {n: tuple(e for e in plan.out_edges[n] if e[1] in downstream)
                         for n in downstream}, ())
        await _GraphRun(self, sub, frame, taken).run()

    def _skip(self, node_id: str, frame: Frame) -> None:
        frame.statuses[node_id] = check_node_move(
            node_id, frame.statuses.get(node_id, NodeStatus.PENDING), NodeStatus.SKIPPED
        )
        self.emit(NodeSkipped(run_id=self.run_id, time=self.runtime.clock.now(), node_id=node_id,
                              node_type=self.compiled.nodes[node_id].type,
                              parent_id=frame.container_id, round=frame.round,
                              parent_execution_id=frame.parent_execution_id))

    # -- one node ----------------------------------------------------------------------------

    async def _execute(self, node_id: str, frame: Frame) -> str:
        """Run one node with retries, its time limit and its error strategy; returns its handle."""
        compiled = self.compiled
        node = compiled.nodes[node_id]
        node_type = compiled.types[node_id]
        clock = self.runtime.clock
        self.steps += 1
        if self.steps > self.max_steps:
            raise RunLimitExceeded(
                f"the run reached max_steps={self.max_steps} at node '{node_id}'; raise "
                "max_steps if the workflow really needs more"
            )
        execution_id = os.urandom(16).hex()
        index = self.steps
        frame.statuses[node_id] = check_node_move(
            node_id, frame.statuses.get(node_id, NodeStatus.PENDING), NodeStatus.RUNNING
        )
        base: dict[str, Any] = {"run_id": self.run_id, "node_id": node_id, "node_type": node.type,
                "execution_id": execution_id, "parent_id": frame.container_id, "round": frame.round,
                "parent_execution_id": frame.parent_execution_id}
        started_at = clock.now()
        self.emit(NodeStarted(time=started_at, **base, title=node.title, index=index))
        # Every finishing event carries what a trace row needs, so sinks keep no state.
        base.update(title=node.title, index=index, started_at=started_at)
        ctx = NodeContext(node, compiled.configs[node_id], execution_id, frame, self)
        t0 = clock.monotonic()
        attempt = 0
        # Containers hold no slot: their children need the slots, and would starve otherwise.
        slots = None if node_type.container else self._slots
        retry = node_type.retry_for(node)
        while True:
            try:
                if slots is not None:
                    await slots.acquire()
                try:
                    if node.max_time is None:
                        raw = await node_type.run(ctx)
                    else:
                        raw = await _with_timeout(node_type.run(ctx), node.max_time)
                finally:
                    if slots is not None:
                        slots.release()
                result = _as_result(raw)
                break
            except asyncio.CancelledError:
                frame.statuses[node_id] = check_node_move(node_id, frame.statuses[node_id],
                                                          NodeStatus.STOPPED)
                self.emit(NodeStopped(time=clock.now(), elapsed=clock.monotonic() - t0,
                                      retries=attempt, **base))
                raise
            except Exception as exc:  # noqa: BLE001 - every node error goes through the policy
                if attempt < retry.max_retries and is_retryable(exc):
                    attempt += 1
                    delay = retry_delay(retry, attempt, exc)
                    self.emit(NodeRetry(time=clock.now(), attempt=attempt, error=_describe(exc),
                                        delay=delay, **_identity(base)))
                    await clock.sleep(delay)
                    continue
                return self._fail(node, frame, base, exc, clock.monotonic() - t0, attempt)
        usage = result.usage
        if usage is not None:
            self.usage = self.usage + usage
        frame.pool.set_outputs(node_id, result.outputs)
        if node.type == "end" and frame.container_id is None:
            self.outputs.update(result.outputs)
        frame.statuses[node_id] = check_node_move(node_id, frame.statuses[node_id],
                                                  NodeStatus.SUCCEEDED)
        self.emit(
            NodeSucceeded(
                time=clock.now(), inputs=result.inputs, process_data=result.process_data,
                outputs=result.outputs, elapsed=clock.monotonic() - t0, retries=attempt,
                metadata=result.metadata, handle=result.handle, **_usage_fields(usage), **base,
            )
        )
        return result.handle

    def _fail(self, node: Node, frame: Frame, base: dict[str, Any], exc: Exception,
              elapsed: float, retries: int) -> str:
        clock = self.runtime.clock
        error = _describe(exc)
        error_type = getattr(exc, "error_type", None) or type(exc).__name__
        if node.error_strategy == "fail":
            frame.statuses[node.id] = check_node_move(node.id, frame.statuses[node.id],
                                                      NodeStatus.FAILED)
            self.emit(NodeFailed(time=clock.now(), error=error, error_type=error_type,
                                 elapsed=elapsed, retries=retries, **base))
            raise NodeFailure(node.id, error, error_type) from exc
        self.exceptions += 1
        outputs: dict[str, Any] = {"error_message": error, "error_type": error_type}
        handle = FAIL_BRANCH
        if node.error_strategy == "default-value":
            outputs = {**node.default_value, **outputs}
            handle = SOURCE
        frame.pool.set_outputs(node.id, outputs)
        frame.statuses[node.id] = check_node_move(node.id, frame.statuses[node.id],
                                                  NodeStatus.EXCEPTION)
        self.emit(NodeException(time=clock.now(), error=error, error_type=error_type,
                                outputs=outputs, handle=handle, elapsed=elapsed, retries=retries,
                                **base))
        return handle

    # -- containers --------------------------------------------------------------------------

    async def run_children(self, container_id: str, pool: VariablePool, round: int,
                           ctx: NodeContext) -> Frame:
        """Run a container's sub-graph once; a failing child raises :class:`NodeFailure`."""
        frame = Frame(container_id, round, pool, parent_execution_id=ctx.execution_id)
        await self._run_graph(self.compiled.graphs[container_id], frame)
        return frame


class _GraphRun:
    """The edge states of one run of one graph level.

    A finished node decides its outgoing edges itself and carries on with the first node it
    made ready, in the same task; only further ready nodes get tasks of their own. A chain
    thus costs no event-loop round trips, while everything ready still runs at once.
    """

    __slots__ = ("active", "done", "execution", "frame", "plan", "taken", "tasks", "unknown")

    def __init__(self, execution: Execution, plan: GraphPlan, frame: Frame,
                 taken: dict[str, int] | None = None):
        self.execution = execution
        self.plan = plan
        self.frame = frame
        self.unknown = dict(plan.in_count)
        #: Taken incoming edges per node; a partial re-run starts with some already decided.
        self.taken: dict[str, int] = taken or {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.active = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        for node_id in self.plan.unreachable:
            self.execution._skip(node_id, self.frame)
            self._decide(node_id, None)
        for node_id in self.plan.roots:
            self._spawn(node_id)
        try:
            await self.done
        finally:
            pending = [t for t in self.tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, node_id: str) -> None:
        self.active += 1
        task = asyncio.get_running_loop().create_task(self._chain(node_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _chain(self, node_id: str | None) -> None:
        execute = self.execution._execute
        try:
            while node_id is not None:
                handle = await execute(node_id, self.frame)
                ready = self._decide(node_id, handle)
                node_id = ready[0] if ready else None
                for other in ready[1:]:
                    self._spawn(other)
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
                        self.execution._skip(target, self.frame)
                        stack.append((target, None))
        return ready


def _identity(base: dict[str, Any]) -> dict[str, Any]:
    return {k: base[k] for k in ("run_id", "node_id", "node_type", "execution_id", "parent_id",
                                 "round", "parent_execution_id")}


def _as_result(raw: Any) -> NodeResult:
    if type(raw) is NodeResult:
        return raw
    if isinstance(raw, Mapping):
        return NodeResult(outputs=dict(raw))
    if raw is None:
        return NodeResult()
    if isinstance(raw, NodeResult):
        return raw
    raise NodeError(
        f"run() returned {type(raw).__name__}",
        hint="return a dict of outputs or a NodeResult",
    )


class _Slots:
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


async def _with_timeout(coro: Any, timeout: float) -> Any:
    try:
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError:
        raise NodeError(
            f"timed out after {timeout:g} s",
            field="max_time",
            hint="raise the node's max_time or make the step faster",
            error_type="NodeTimeout",
        ) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (NodeError, NodeFailure)):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _usage_fields(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cost": usage.cost,
    }


def _split_inputs(inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    system = {k[4:]: v for k, v in inputs.items() if k.startswith("sys.")}
    start = {k: v for k, v in inputs.items() if not k.startswith("sys.")}
    return system, start


#: The last compilation of each workflow object, with the state it was made from.
_compiled: dict[int, tuple[weakref.ref[Workflow], tuple[int, bytes], CompiledWorkflow]] = {}


def compile_workflow(workflow: Workflow) -> CompiledWorkflow:
    """Validate and precompute ``workflow``; raises :class:`WorkflowError` with its problems.

    The result is reused while the workflow (every field of every node and edge) and the
    registered node types stay as they were: batch runs and the editor's re-runs skip the
    validation, which costs far more than the snapshot that checks for changes.
    """
    try:
        key = (registry.generation, pickle.dumps(workflow, pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001 - a config holds something pickle cannot take
        return CompiledWorkflow(workflow)
    number = id(workflow)
    entry = _compiled.get(number)
    if entry is not None and entry[0]() is workflow and entry[1] == key:
        return entry[2]
    compiled = CompiledWorkflow(workflow)

    def forget(ref: weakref.ref[Workflow], cache: dict[int, Any] = _compiled) -> None:
        # ``cache`` bound now: at interpreter exit the module's globals may be gone already.
        if cache.get(number, (None,))[0] is ref:
            del cache[number]

    _compiled[number] = (weakref.ref(workflow, forget), key, compiled)
    return compiled


__all__ = ["CompiledWorkflow", "Execution", "Frame", "GraphPlan", "NodeFailure", "compile_workflow"]
