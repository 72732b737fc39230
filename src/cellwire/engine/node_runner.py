"""The node runner: one node execution with its retries, time limit and error strategy,
and the events that tell the layers about it."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cellwire.model import FAIL_BRANCH, SOURCE, Node

from .events import (
    NodeException,
    NodeFailed,
    NodePaused,
    NodeRetry,
    NodeSkipped,
    NodeStarted,
    NodeStopped,
    NodeSucceeded,
)
from .fingerprint import cache_key
from .forms import Form, PauseRequested
from .node import NodeContext, NodeError, NodeResult, Usage
from .retry import is_retryable, retry_delay
from .state import NodeStatus, check_node_move

if TYPE_CHECKING:
    from .executor import Execution
    from .scheduler import Frame


#: Execution ids: random per process, then counted. Unique as a uuid4 is, without a system
#: call per node (``os.urandom`` releases the GIL, and the store's writer thread takes it).
_ID_PREFIX = os.urandom(8).hex()
_ids = itertools.count(1)


class NodeFailure(Exception):
    """A node failed and its error strategy is ``fail``: the graph it is in stops."""

    def __init__(self, node_id: str, error: str, error_type: str):
        self.node_id = node_id
        self.error = error
        self.error_type = error_type
        super().__init__(f"node '{node_id}' failed: {error}")


class RunLimitExceeded(Exception):
    pass


def skip(run: Execution, node_id: str, frame: Frame) -> None:
    """Mark ``node_id`` skipped (every edge into it was skipped) and say so."""
    frame.statuses[node_id] = check_node_move(
        node_id, frame.statuses.get(node_id, NodeStatus.PENDING), NodeStatus.SKIPPED
    )
    run.emit(NodeSkipped(run_id=run.run_id, time=run.runtime.clock.now(), node_id=node_id,
                          node_type=run.compiled.nodes[node_id].type,
                          parent_id=frame.container_id, round=frame.round,
                          parent_execution_id=frame.parent_execution_id))



async def execute(run: Execution, node_id: str, frame: Frame) -> str | None:
    """Run one node with retries, its time limit and its error strategy; returns its handle,
    or None when the node paused the run to wait for a person (its edges wait too)."""
    compiled = run.compiled
    node = compiled.nodes[node_id]
    node_type = compiled.types[node_id]
    # Containers hold no slot: their children need the slots, and would starve otherwise.
    slots = None if node_type.container else run.slots
    if slots is not None:
        # A node waiting for a slot has not started: its start event and elapsed time begin
        # when it has one, as Dify's workers start a node when they take it (otherwise a run
        # bounded to 2 shows its tenth call started with the first, taking five times as
        # long as it did).
        await slots.acquire()
    held = slots is not None
    try:
        clock = run.runtime.clock
        run.state.steps += 1
        if run.state.steps > run.max_steps:
            raise RunLimitExceeded(
                f"the run reached max_steps={run.max_steps} at node '{node_id}'; raise "
                "max_steps if the workflow really needs more"
            )
        execution_id = f"{_ID_PREFIX}{next(_ids):016x}"
        index = run.state.steps
        frame.statuses[node_id] = check_node_move(
            node_id, frame.statuses.get(node_id, NodeStatus.PENDING), NodeStatus.RUNNING
        )
        base: dict[str, Any] = {"run_id": run.run_id, "node_id": node_id, "node_type": node.type,
                "execution_id": execution_id, "parent_id": frame.container_id, "round": frame.round,
                "parent_execution_id": frame.parent_execution_id}
        started_at = clock.now()
        run.emit(NodeStarted(time=started_at, **base, title=node.title, index=index))
        # Every finishing event carries what a trace row needs, so layers keep no state.
        base.update(title=node.title, index=index, started_at=started_at)
        ctx = NodeContext(node, compiled.configs[node_id], execution_id, frame, run)
        t0 = clock.monotonic()
        attempt = 0
        retry = node_type.retry_for(node)
        cache = run.runtime.node_cache
        key = _cache_key(run, node_id, frame) if cache is not None and node_type.pure else None
        result = cache.get(key) if cache is not None and key is not None else None
        while result is None:
            try:
                if slots is not None and not held:  # a retry waits for a slot again
                    await slots.acquire()
                    held = True
                try:
                    if node.max_time is None:
                        raw = await node_type.run(ctx)
                    else:
                        raw = await _with_timeout(node_type.run(ctx), node.max_time)
                finally:
                    if held and slots is not None:
                        slots.release()
                        held = False
                result = _as_result(raw)
                if key is not None and cache is not None:
                    cache.put(key, result)
                break
            except asyncio.CancelledError:
                frame.statuses[node_id] = check_node_move(node_id, frame.statuses[node_id],
                                                          NodeStatus.STOPPED)
                run.emit(NodeStopped(time=clock.now(), elapsed=clock.monotonic() - t0,
                                      retries=attempt, **base))
                raise
            except PauseRequested as pause:
                _pause(run, node_id, frame, base, pause.form, clock.monotonic() - t0)
                return None
            except Exception as exc:  # noqa: BLE001 - every node error goes through the policy
                if attempt < retry.max_retries and is_retryable(exc):
                    attempt += 1
                    delay = retry_delay(retry, attempt, exc)
                    run.emit(NodeRetry(time=clock.now(), attempt=attempt, error=_describe(exc),
                                        delay=delay, **_identity(base)))
                    await clock.sleep(delay)
                    continue
                return fail(run, node, frame, base, exc, clock.monotonic() - t0, attempt)
    finally:
        if held and slots is not None:
            slots.release()
    usage = result.usage
    if usage is not None:
        run.state.usage = run.state.usage + usage
    frame.pool.set_outputs(node_id, result.outputs)
    if node.type == "end" and frame.container_id is None:
        run.state.outputs.update(result.outputs)
    frame.statuses[node_id] = check_node_move(node_id, frame.statuses[node_id],
                                              NodeStatus.SUCCEEDED)
    metadata = result.metadata
    if node_id in run.stale_nodes:
        metadata = {**metadata, "stale": True}
    run.emit(
        NodeSucceeded(
            time=clock.now(), inputs=result.inputs, process_data=result.process_data,
            outputs=result.outputs, elapsed=clock.monotonic() - t0, retries=attempt,
            metadata=metadata, handle=result.handle, **_usage_fields(usage), **base,
        )
    )
    return result.handle


def _pause(run: Execution, node_id: str, frame: Frame, base: dict[str, Any], form: Form,
           elapsed: float) -> None:
    """Record that ``node_id`` waits for ``form``; the run pauses once nothing else can run."""
    # The form is shown to people and stored: it holds no value of the run's secrets.
    shown = Form.from_dict(run.state.redactor.value(form.to_dict()))
    run.state.forms[node_id] = shown
    frame.statuses[node_id] = check_node_move(node_id, frame.statuses[node_id],
                                              NodeStatus.PAUSED)
    run.emit(NodePaused(time=run.runtime.clock.now(), elapsed=elapsed, form=shown.to_dict(),
                        **base))


def _cache_key(run: Execution, node_id: str, frame: Frame) -> str | None:
    """The node cache's key for ``node_id`` with the values it reads now, and where its code
    runs: a result from the kernel never answers a sandboxed run, nor the reverse."""
    compiled = run.compiled
    code = run.runtime.code
    where = "kernel" if code is None else f"{type(code).__qualname__}@{id(code):x}"
    fingerprint = f"{compiled.fingerprints(run.runtime.model_override)[node_id]}:{where}"
    pool = frame.pool
    try:
        return cache_key(fingerprint, compiled.reads(node_id), lambda s: pool.get(s, None))
    except Exception:  # noqa: BLE001 - a value that refuses to be read (a secret not granted)
        return None  # is not cached: the node runs and reports it itself



def fail(run: Execution, node: Node, frame: Frame, base: dict[str, Any], exc: Exception,
         elapsed: float, retries: int) -> str:
    """Apply the node's error strategy to ``exc``: raise :class:`NodeFailure` (``fail``), or
    record the error as its outputs and return the handle it leaves through."""
    clock = run.runtime.clock
    error = _describe(exc)
    error_type = getattr(exc, "error_type", None) or type(exc).__name__
    if node.error_strategy == "fail":
        frame.statuses[node.id] = check_node_move(node.id, frame.statuses[node.id],
                                                  NodeStatus.FAILED)
        run.emit(NodeFailed(time=clock.now(), error=error, error_type=error_type,
                             elapsed=elapsed, retries=retries, **base))
        raise NodeFailure(node.id, error, error_type) from exc
    run.state.exceptions += 1
    outputs: dict[str, Any] = {"error_message": error, "error_type": error_type}
    handle = FAIL_BRANCH
    if node.error_strategy == "default-value":
        outputs = {**node.default_value, **outputs}
        handle = SOURCE
    frame.pool.set_outputs(node.id, outputs)
    frame.statuses[node.id] = check_node_move(node.id, frame.statuses[node.id],
                                              NodeStatus.EXCEPTION)
    run.emit(NodeException(time=clock.now(), error=error, error_type=error_type,
                            outputs=outputs, handle=handle, elapsed=elapsed, retries=retries,
                            **base))
    return handle



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


__all__ = ["NodeFailure", "RunLimitExceeded", "execute", "fail", "skip"]
