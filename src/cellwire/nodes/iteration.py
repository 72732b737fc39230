"""iteration: run the inner sub-graph once per item of an array and collect one output each.

Each round runs in its own shallow copy of the pool, holding ``[iteration_id, 'item']`` and
``[iteration_id, 'index']``; after the round ``output_selector`` is read from that copy. In
parallel mode up to ``parallel_nums`` rounds run at once and outputs stay in item order.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeFailure, NodeResult
from cellwire.engine.events import ContainerCompleted, ContainerNext, ContainerStarted
from cellwire.model import NodeConfig, node_type

ErrorHandleMode = Literal["terminated", "continue-on-error", "remove-abnormal-output"]


class IterationConfig(NodeConfig):
    iterator_selector: list[str]
    #: The value inside the sub-graph that each round contributes to ``output``.
    output_selector: list[str] = Field(default_factory=list)
    start_node_id: str = ""
    is_parallel: bool = False
    parallel_nums: int = Field(10, ge=1)
    error_handle_mode: ErrorHandleMode = "terminated"
    #: When every output is itself a list, join them into one list.
    flatten_output: bool = True
    iterator_input_type: str | None = None
    output_type: str | None = None


class _Rounds:
    """The state shared by the rounds of one iteration run."""

    __slots__ = ("ctx", "durations", "errors", "items", "outputs")

    def __init__(self, ctx: NodeContext, items: list[Any]):
        self.ctx = ctx
        self.items = items
        self.outputs: list[Any] = [None] * len(items)
        self.errors: dict[int, str] = {}
        self.durations: dict[str, float] = {}

    async def run_one(self, index: int) -> None:
        """Run round ``index``; a failure is recorded, or raised in ``terminated`` mode."""
        ctx = self.ctx
        config: IterationConfig = ctx.config
        clock = ctx.runtime.clock
        ctx.emit(ContainerNext, kind="iteration", index=index)
        pool = ctx.pool.child()
        pool.set_outputs(ctx.node.id, {"item": self.items[index], "index": index})
        t0 = clock.monotonic()
        try:
            await ctx.run_children(pool, index)
        except NodeFailure as exc:
            self.durations[str(index)] = clock.monotonic() - t0
            if config.error_handle_mode == "terminated":
                raise NodeError(
                    f"item {index} failed: {exc}",
                    field="error_handle_mode",
                    hint="fix the failing node, or set error_handle_mode to 'continue-on-error' "
                         "or 'remove-abnormal-output' to carry on past failed items",
                    error_type=exc.error_type,
                ) from exc
            self.errors[index] = str(exc)
            return
        self.durations[str(index)] = clock.monotonic() - t0
        if config.output_selector:
            self.outputs[index] = pool.get(config.output_selector, None)

    async def run_sequential(self) -> None:
        for index in range(len(self.items)):
            await self.run_one(index)

    async def run_parallel(self, limit: int) -> None:
        # A few workers pull indices in order, so at most `limit` rounds run at once and
        # rounds start in item order.
        indices = iter(range(len(self.items)))

        async def worker() -> None:
            for index in indices:
                await self.run_one(index)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(self.items)))]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


@node_type("iteration", config=IterationConfig, container=True,
           outputs=("output", "item", "index"))
async def run(ctx: NodeContext) -> NodeResult:
    """Run the inner nodes once per item of ``iterator_selector``; ``output`` lists the results."""
    config: IterationConfig = ctx.config
    items = ctx.get_list(config.iterator_selector, field="iterator_selector")
    inputs = {"iterator_selector": items}
    if not items:
        return NodeResult(inputs=inputs, outputs={"output": []},
                          metadata={"iteration_duration_map": {}})
    rounds = _Rounds(ctx, items)
    ctx.emit(ContainerStarted, kind="iteration", total=len(items))
    try:
        if config.is_parallel:
            await rounds.run_parallel(config.parallel_nums)
        else:
            await rounds.run_sequential()
    except BaseException as exc:
        ctx.emit(ContainerCompleted, kind="iteration", rounds=len(rounds.durations),
                 reason=_reason(exc))
        raise
    outputs = rounds.outputs
    if config.error_handle_mode == "remove-abnormal-output":
        outputs = [out for i, out in enumerate(outputs) if i not in rounds.errors]
    if config.flatten_output:
        outputs = flatten(outputs)
    ctx.emit(ContainerCompleted, kind="iteration", rounds=len(items), reason="completed")
    metadata: dict[str, Any] = {"iteration_duration_map": rounds.durations}
    if rounds.errors:
        metadata["errors"] = {str(i): rounds.errors[i] for i in sorted(rounds.errors)}
    return NodeResult(inputs=inputs, outputs={"output": outputs}, metadata=metadata)


def _reason(exc: BaseException) -> str:
    return "stopped" if isinstance(exc, asyncio.CancelledError) else "error"


def flatten(outputs: list[Any]) -> list[Any]:
    """Join the outputs into one list when every one that is not None is a list (as Dify).

    As in Dify, the None outputs of failed rounds drop out of a flattened list.
    """
    present = [out for out in outputs if out is not None]
    if not present or not all(isinstance(out, list) for out in present):
        return outputs
    return [value for out in present for value in out]


@node_type("iteration-start", start=True, outputs=())
async def run_start(ctx: NodeContext) -> NodeResult:
    """Where an iteration's inner graph begins; it passes through."""
    return NodeResult()
