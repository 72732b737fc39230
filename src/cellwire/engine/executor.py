"""One run of a compiled workflow: its state, its events and layers, its end.

The plan (:mod:`.plan`) says what the graph is; the scheduler (:mod:`.scheduler`) decides
edges and runs what is ready; the node runner (:mod:`.node_runner`) runs one node with its
retries and error strategy. :class:`Execution` ties them to one run: it owns the run state,
emits the events, hands them to the layers, and builds the result.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Collection, Mapping
from typing import Any

from cellwire.model import Problem, WorkflowError
from cellwire.model.validate import missing_inputs, unknown_inputs

from .bounded_jinja import TemplateLimits
from .checkpoint import DEFAULT_DURABILITY, Restored, RunCheckpoint, check_durability
from .commands import Command, Stop
from .context import VariablePool
from .events import (
    Event,
    NodeFinished,
    RunFailed,
    RunPartialSucceeded,
    RunPaused,
    RunStarted,
    RunStopped,
    RunSucceeded,
    StreamChunk,
)
from .forms import Answer, Form
from .layers import RunLayers
from .node import NodeContext
from .node_runner import NodeFailure, RunLimitExceeded
from .plan import CompiledWorkflow, GraphPlan, rerun_plan
from .result import RunResult
from .run_state import RunState
from .runtime import Runtime
from .scheduler import Frame, GraphRun, Slots
from .secrets import StreamRedactor, check_grants, environment_values, redactor
from .state import RunStatus, check_run_move

#: Node executions in flight within one run. High, so a wide fan-out of LLM calls (which wait
#: on the network, not the CPU) runs at once; each model's rate limits protect its provider,
#: and the sandbox bounds the code it runs by its own pool.
DEFAULT_CONCURRENCY = 256
DEFAULT_MAX_STEPS = 10_000
DEFAULT_MAX_TIME = 1200.0


class Execution:
    """One run of a compiled workflow. ``stop()`` cancels it; it then ends ``stopped``.

    ``secrets`` are the values the user granted, by environment variable name
    (:mod:`cellwire.services.secrets` resolves grants to them); a secret not granted has no
    value, and every granted value is redacted from what the run shows. A rerun
    (``previous``) given no ``secrets`` keeps the grants of the run it reruns.

    ``start_at`` is a top-level node, or several: they and what follows them run, the rest
    keeps the results of ``previous``. ``stale_nodes`` are the nodes the run executes because
    they changed since the last run (``%workflow run --stale``): their trace rows say so
    (``"stale": true`` in their metadata).
    ``durability`` says when the run's checkpoints are committed (:mod:`.checkpoint`), when
    the runtime has a checkpointer. ``resume`` continues the run a checkpoint describes: its
    id, inputs and ``sys`` values, the outputs and edge decisions of its finished top-level
    nodes, which are not run again.
    """

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
        start_at: str | Collection[str] | None = None,
        previous: RunResult | None = None,
        single: bool = False,
        secrets: Mapping[str, str] | None = None,
        stale_nodes: Collection[str] = (),
        durability: str = DEFAULT_DURABILITY,
        resume: Restored | None = None,
    ):
        if resume is not None:
            if start_at is not None or previous is not None:
                raise ValueError("resume continues a run from its checkpoint: it takes no "
                                 "start_at or previous")
            run_id, inputs = resume.run_id, resume.inputs
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.compiled = compiled
        self.inputs = dict(inputs)
        self.runtime = runtime
        self.run_id = run_id or uuid.uuid4().hex
        self.durability = check_durability(durability)
        self.concurrency = concurrency
        self.resumed = resume
        self._checkpoint: RunCheckpoint | None = None
        #: The forms this run paused with before it was resumed, and their answers, by node.
        self.forms: dict[str, Form] = dict(resume.forms) if resume is not None else {}
        self.answers: dict[str, Answer] = dict(resume.answers) if resume is not None else {}
        #: Render limits by kind, read from the environment at the run's first render.
        self.template_limits: dict[str, TemplateLimits] = {}
        self.max_steps = max_steps
        self.max_time = max_time
        #: What the run knows (pool, node statuses, edge decisions, usage); reruns read it.
        self.state = RunState(self.run_id, compiled.workflow.name, inputs=dict(inputs))
        self.events: list[Event] = []
        #: The run's concurrency limit, shared by every graph level.
        self.slots = Slots(concurrency)
        self._task: asyncio.Task[Any] | None = None
        self._stop_reason: str | None = None
        self._conversation = conversation
        if start_at is not None:
            if previous is None:
                raise ValueError("start_at needs the previous run whose outputs it reuses")
            for node_id in [start_at] if isinstance(start_at, str) else start_at:
                if compiled.nodes.get(node_id) is None or compiled.nodes[node_id].parent \
                        is not None:
                    raise ValueError(f"start_at={node_id!r} is not a top-level node of the "
                                     "workflow")
            if not start_at:
                raise ValueError("start_at: give at least one node")
        if single and start_at is None:
            raise ValueError("single runs the start_at node alone: give start_at")
        self._start_at = start_at
        #: Stop after ``start_at``: what follows it is not run (it keeps its previous results).
        self._single = single
        self._previous = previous
        #: Nodes run because they changed since the last run; their trace rows say so.
        self.stale_nodes = frozenset(stale_nodes)
        self._layers = RunLayers(runtime.layers)
        self._deliver = self._layers.event
        if secrets is None and previous is not None and previous.state is not None:
            # A rerun ("run from here") keeps what the user granted to the run it reruns.
            secrets = previous.state.secrets
        granted = dict(secrets or {})
        check_grants(granted)
        self._env = environment_values(compiled.workflow, granted)
        self.state.secrets = granted
        #: Redacts this run's granted values; when there are any, every event goes through it.
        self.state.redactor = self._redact = redactor(granted.values())
        self._streams = StreamRedactor(self._redact) if self._redact else None

    # -- events --------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        streams = self._streams
        if streams is not None:
            if type(event) is StreamChunk:
                shown = streams.chunk(event)
                if shown is not None:
                    self._show(shown)
                return
            if isinstance(event, NodeFinished):
                for held in streams.flush(event.execution_id):
                    self._show(held)
            event = self._redact.event(event)
        self._show(event)

    def _show(self, event: Event) -> None:
        if type(event) is StreamChunk and event.node_type == "answer":
            self.state.answer.append(event.text)
        self.events.append(event)
        self._deliver(event)

    @property
    def previous(self) -> RunResult | None:
        """The run whose results a rerun reuses (None for a whole run)."""
        return self._previous

    @property
    def status(self) -> RunStatus:
        return self.state.status

    def _move(self, new: RunStatus) -> None:
        self.state.status = check_run_move(self.state.status, new)

    # -- the run -------------------------------------------------------------------------

    def command(self, command: Command) -> None:
        """Carry out ``command`` (call it on the run's event loop)."""
        if isinstance(command, Stop):
            self.stop(command.reason)
        else:
            raise TypeError(f"a run cannot carry out {command!r} yet")

    def stop(self, reason: str = "stopped by the user") -> None:
        """Cancel the run: in-flight nodes are cancelled and the run ends ``stopped``."""
        # Once the run has ended it only waits for its layers (the store): nothing to stop.
        if (self._task is not None and not self._task.done() and self._stop_reason is None
                and self.status is RunStatus.RUNNING):
            self._stop_reason = reason
            self._task.cancel(reason)

    async def run(self) -> RunResult:
        task = self._task = asyncio.current_task()
        assert task is not None, "Execution.run() runs as an asyncio task"
        clock = self.runtime.clock
        started = clock.now()
        t0 = clock.monotonic()
        system, start_inputs = _split_inputs(self.inputs)
        self._move(RunStatus.RUNNING)
        first = RunStarted(run_id=self.run_id, time=started, workflow=self.compiled.workflow.name,
                           inputs=self.inputs,
                           reason="initial" if self.resumed is None else "resume")
        shown = self._redact.event(first)
        assert isinstance(shown, RunStarted)
        self._layers.start(shown)
        self.emit(first)
        error: str | None = None
        error_node: str | None = None
        try:
            problems = (missing_inputs(self.compiled.workflow, start_inputs)
                        + unknown_inputs(self.compiled.workflow, start_inputs))
            if problems:
                raise WorkflowError(problems, "the run cannot start")
            if self._conversation is None:
                self._conversation = await self._stored_conversation(system)
            pool = self.state.pool = self._initial_pool(system, start_inputs)
            top = Frame(None, None, pool, statuses=self.state.nodes)
            restored = None if self.resumed is None else self._restore(self.resumed)
            checkpointer = self.runtime.checkpointer
            if checkpointer is not None:
                self._checkpoint = checkpointer.begin(self, self.durability, self.resumed)
                if self._checkpoint is not None:
                    # A run that started can be resumed, whatever its durability.
                    await self._checkpoint.started()
            async with asyncio.timeout(self.max_time):
                if restored is not None:
                    await GraphRun(self, self.compiled.graphs[None], top,
                                   restored=restored).run()
                elif self._start_at is None:
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
                # Cancelled from outside: the layers get the end but the task cannot wait.
                self._layers.end_nowait(self._finish_stopped(started, "cancelled"))
                raise
            # Our own stop(): the cancellation ends here and the run reports `stopped`.
            task.uncancel()
        if self._stop_reason is not None:
            return await self._ended(
                self._finish_stopped(started, self._stop_reason, clock.monotonic() - t0))
        elapsed = clock.monotonic() - t0
        if error is not None:
            self._move(RunStatus.FAILED)
            self.emit(RunFailed(run_id=self.run_id, time=clock.now(), error=error,
                                node_id=error_node, exceptions_count=self.state.exceptions))
        elif self.state.forms:
            self._move(RunStatus.PAUSED)
            self.emit(RunPaused(run_id=self.run_id, time=clock.now(),
                                forms=[f.to_dict() for f in self.state.forms.values()],
                                outputs=self.state.outputs))
        elif self.state.exceptions:
            self._move(RunStatus.PARTIAL_SUCCEEDED)
            self.emit(RunPartialSucceeded(run_id=self.run_id, time=clock.now(),
                                          outputs=self.state.outputs, exceptions_count=self.state.exceptions))
        else:
            self._move(RunStatus.SUCCEEDED)
            self.emit(RunSucceeded(run_id=self.run_id, time=clock.now(),
                                   outputs=self.state.outputs))
        return await self._ended(self._result(started, elapsed, error, error_node))

    async def _ended(self, result: RunResult) -> RunResult:
        """Hand the result to the layers, wait for them (the store: until the run is on
        disk), and say in the result which of them failed and whether the run was stored."""
        layers = self._layers
        await layers.end(result)
        redact = self._redact
        said = [str(p).removeprefix("warning: ") for p in self.compiled.warnings]
        result.warnings = [redact.text(w) for w in [*said, *layers.warnings]]
        result.stored = layers.stored
        result.store_error = redact.text("; ".join(layers.store_errors)) or None
        return result

    def _finish_stopped(self, started: float, reason: str, elapsed: float = 0.0) -> RunResult:
        self._move(RunStatus.STOPPED)
        self.emit(RunStopped(run_id=self.run_id, time=self.runtime.clock.now(), reason=reason))
        return self._result(started, elapsed, reason, None)

    def _result(self, started: float, elapsed: float, error: str | None,
                error_node: str | None) -> RunResult:
        redact = self._redact
        return RunResult(
            run_id=self.run_id,
            workflow=self.compiled.workflow.name,
            status=self.status,
            inputs=redact.value(self.inputs),
            outputs=redact.value(self.state.outputs),
            answer=redact.text("".join(self.state.answer)),
            error=redact.value(error),
            error_node=error_node,
            started_at=started,
            elapsed_ms=elapsed * 1000,
            usage=self.state.usage,
            exceptions_count=self.state.exceptions,
            events=self.events,
            state=self.state,
            forms=list(self.state.forms.values()),
            checkpointer=self.runtime.checkpointer if self._checkpoint is not None else None,
        )

    async def _stored_conversation(self, system: Mapping[str, Any]) -> dict[str, Any] | None:
        """The workflow's conversation variables as the last turn of the run's conversation
        (``sys.conversation_id``) left them; None (the declared values) for a run outside a
        conversation or without a conversation store. Variables the workflow no longer
        declares are dropped; those no turn assigned keep their declared value."""
        store = self.runtime.conversations
        conversation_id = system.get("conversation_id")
        declared = self.compiled.workflow.conversation_variables
        if store is None or conversation_id is None or conversation_id == "" or not declared:
            return None
        workflow = self.compiled.workflow.name
        try:
            stored = await asyncio.to_thread(store.conversation_variables, workflow,
                                             str(conversation_id))
        except Exception as exc:  # the run fails saying why; it never guesses the values
            raise WorkflowError([Problem(
                None, "sys.conversation_id",
                f"the variables of conversation {conversation_id!r} could not be read from "
                f"the store ({type(exc).__name__}: {exc})",
                "check that the run store is readable, or run without the conversation id")],
                "the run cannot start") from exc
        return {v.name: stored.get(v.name, v.value) for v in declared}

    def _initial_pool(self, system: dict[str, Any], start_inputs: dict[str, Any]) -> VariablePool:
        workflow = self.compiled.workflow
        conversation = self._conversation
        if self.resumed is not None:
            conversation = dict(self.resumed.conversation)
        elif conversation is None:
            conversation = {v.name: v.value for v in workflow.conversation_variables}
        data: dict[str, dict[str, Any]] = {
            "sys": dict(self.resumed.system) if self.resumed is not None else {
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
            if self.compiled.types[root].start:
                # The start node (or a trigger, which starts a run as one) reads its inputs
                # from its own slot, as in Dify.
                data[root] = dict(start_inputs)
        return VariablePool(data)

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, node_id: str, handle: str | None,
                   has_successors: bool) -> Awaitable[None] | None:
        """Hand the write of finished top-level ``node_id`` to the checkpointer; in ``sync``
        durability, an awaitable that completes once it is committed (only when nodes
        depend on it: nothing waits for a write that nothing needs)."""
        checkpoint = self._checkpoint
        if checkpoint is None:
            return None
        return checkpoint.put(node_id, handle, has_successors and self.durability == "sync")

    def _restore(self, saved: Restored) -> dict[str, str | None]:
        """Put what ``saved`` finished back into the state; returns their handles."""
        state = self.state
        types = self.compiled.nodes
        handles: dict[str, str | None] = {}
        for node_id, (status, handle) in saved.nodes.items():
            node = types.get(node_id)
            if node is None or node.parent is not None:
                continue  # the version ran is the one resumed: only a damaged store gets here
            outputs = saved.outputs.get(node_id, {})
            state.pool.set_outputs(node_id, outputs)
            state.nodes[node_id] = status
            state.handles[node_id] = handles[node_id] = handle
            if node.type == "end":
                state.outputs.update(outputs)
            elif node.type == "answer" and isinstance(outputs.get("answer"), str):
                state.answer.append(outputs["answer"])
        state.steps = saved.steps
        state.usage = saved.usage
        state.exceptions = saved.exceptions
        return handles

    # -- one graph level -------------------------------------------------------------------

    async def _run_graph(self, plan: GraphPlan, frame: Frame) -> None:
        await GraphRun(self, plan, frame).run()

    async def _run_downstream(self, frame: Frame) -> None:
        """Run ``start_at`` and what follows it (only ``start_at`` when ``single``), reusing
        the previous run for the rest.

        Nodes upstream of ``start_at`` keep their previous outputs and are not run; an edge
        from such a node into the re-run part is decided as the previous run decided it.
        """
        previous = self._previous
        assert previous is not None and self._start_at is not None
        if previous.state is None:
            raise ValueError("previous: a RunResult of this process (its state is not kept "
                             "in the store); run the workflow again first")
        before = previous.state
        handles = {n: before.handles.get(n) for n in before.finished()}
        for node_id in handles:
            outputs = before.pool.outputs(node_id)
            if outputs is not None:
                frame.pool.set_outputs(node_id, outputs)
        self.state.outputs.update(before.outputs)
        sub, taken = rerun_plan(self.compiled.graphs[None], self._start_at, single=self._single,
                                handles=handles, branching=self.compiled.branching)
        # The nodes reused from the previous run keep its statuses and decisions, so a rerun
        # of this rerun finds them too.
        for node_id, status in before.nodes.items():
            if node_id not in sub.in_count:
                self.state.nodes[node_id] = status
                if node_id in handles:
                    self.state.handles[node_id] = handles[node_id]
        await GraphRun(self, sub, frame, taken).run()

    # -- one node ----------------------------------------------------------------------------

    # -- containers --------------------------------------------------------------------------

    async def run_children(self, container_id: str, pool: VariablePool, round: int,
                           ctx: NodeContext) -> Frame:
        """Run a container's sub-graph once; a failing child raises :class:`NodeFailure`."""
        frame = Frame(container_id, round, pool, parent_execution_id=ctx.execution_id)
        await self._run_graph(self.compiled.graphs[container_id], frame)
        return frame


def _split_inputs(inputs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    system = {k[4:]: v for k, v in inputs.items() if k.startswith("sys.")}
    start = {k: v for k, v in inputs.items() if not k.startswith("sys.")}
    return system, start


__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_MAX_STEPS", "DEFAULT_MAX_TIME", "Execution"]
