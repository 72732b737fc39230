"""The executor's semantics: edges, joins, concurrency, retries, timeouts, errors, limits."""

from __future__ import annotations

import asyncio
import random

import pytest

import cellwire
from cellwire.engine import (
    CompiledWorkflow,
    Execution,
    FatalError,
    NodeResult,
    RetryableError,
    RunStatus,
    Runtime,
)
from cellwire.engine.events import (
    NodeException,
    NodeFailed,
    NodeRetry,
    NodeSkipped,
    NodeStarted,
    NodeStopped,
    NodeSucceeded,
    RunStarted,
    RunSucceeded,
)
from cellwire.engine.retry import retry_delay
from cellwire.engine.state import IllegalTransition, NodeStatus, check_node_move, check_run_move
from cellwire.model import NodeConfig, Retry, node_type


class ValueConfig(NodeConfig):
    value: object = None
    handle: str = "a"
    sleep: float = 0.0
    fail_times: int = 0
    fail_kind: str = "retryable"
    retry_after: float | None = None


_attempts: dict[str, int] = {}


@node_type("t-value", config=ValueConfig, outputs=["value"])
async def _value(ctx):
    """Outputs its configured value after an optional sleep; can fail N times first."""
    key = f"{ctx.run_id}:{ctx.node.id}"
    if ctx.config.sleep:
        await asyncio.sleep(ctx.config.sleep)
    seen = _attempts.get(key, 0)
    if seen < ctx.config.fail_times:
        _attempts[key] = seen + 1
        if ctx.config.fail_kind == "fatal":
            raise FatalError("bad request")
        raise RetryableError("flaky", retry_after=ctx.config.retry_after)
    return {"value": ctx.config.value}


@node_type("t-pick", config=ValueConfig, outputs=["value"], handles=["a", "b", "c"])
async def _pick(ctx):
    """A branch that leaves through its configured handle."""
    return NodeResult(outputs={"value": ctx.config.handle}, handle=ctx.config.handle)


@node_type("t-boom")
async def _boom(ctx):
    raise ValueError("kaboom")


def _statuses(result):
    return {row.node_id: row.status for row in result.trace.itertuples()}


async def test_chain_passes_values_and_emits_ordered_events():
    wf = cellwire.Workflow("chain")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "number"}])
    wf.add_node("a", "t-value", value=1, after="start")
    wf.add_node("end", "end", outputs=[{"variable": "x", "value_selector": ["start", "x"]},
                                       {"variable": "a", "value_selector": ["a", "value"]}],
                after="a")
    result = await wf.arun(x="41")
    assert result.status == RunStatus.SUCCEEDED
    assert result.outputs == {"x": 41, "a": 1}
    kinds = [type(e) for e in result.events]
    assert kinds[0] is RunStarted and kinds[-1] is RunSucceeded
    started = [e.node_id for e in result.events if isinstance(e, NodeStarted)]
    assert started == ["start", "a", "end"]
    assert list(result.trace.node_id) == ["start", "a", "end"]


async def test_branch_skips_unchosen_edges_and_propagates():
    wf = cellwire.Workflow("branch")
    wf.add_node("pick", "t-pick", handle="b")
    wf.add_node("on_a", "t-value", after=[("pick", "a")])
    wf.add_node("after_a", "t-value", after="on_a")
    wf.add_node("on_b", "t-value", after=[("pick", "b")])
    result = await wf.arun()
    assert _statuses(result) == {"pick": "succeeded", "on_a": "skipped", "after_a": "skipped",
                                 "on_b": "succeeded"}


async def test_join_runs_once_when_any_incoming_edge_taken_and_waits_for_all():
    wf = cellwire.Workflow("join")
    wf.add_node("pick", "t-pick", handle="a")
    wf.add_node("fast", "t-value", value="f", after=[("pick", "a")])
    wf.add_node("slow", "t-value", value="s", sleep=0.01, after=[("pick", "a")])
    wf.add_node("never", "t-value", after=[("pick", "b")])
    wf.add_node("join", "t-value", after=["fast", "slow", "never"])
    result = await wf.arun()
    assert _statuses(result)["join"] == "succeeded"
    order = [e.node_id for e in result.events if isinstance(e, NodeStarted)]
    assert order.count("join") == 1
    assert order.index("join") > order.index("slow")
    finished_slow = next(i for i, e in enumerate(result.events)
                         if isinstance(e, NodeSucceeded) and e.node_id == "slow")
    started_join = next(i for i, e in enumerate(result.events)
                        if isinstance(e, NodeStarted) and e.node_id == "join")
    assert started_join > finished_slow


async def test_join_is_skipped_when_every_incoming_edge_is_skipped():
    wf = cellwire.Workflow("join-skip")
    wf.add_node("pick", "t-pick", handle="c")
    wf.add_node("x", "t-value", after=[("pick", "a")])
    wf.add_node("y", "t-value", after=[("pick", "b")])
    wf.add_node("join", "t-value", after=["x", "y"])
    result = await wf.arun()
    assert _statuses(result) == {"pick": "succeeded", "x": "skipped", "y": "skipped",
                                 "join": "skipped"}
    assert result.status == RunStatus.SUCCEEDED


async def test_ready_nodes_run_concurrently():
    wf = cellwire.Workflow("fan")
    wf.add_node("root", "t-value")
    for i in range(5):
        wf.add_node(f"w{i}", "t-value", sleep=0.01, after="root")
    result = await wf.arun()
    events = [e for e in result.events if isinstance(e, (NodeStarted, NodeSucceeded))
              and e.node_id.startswith("w")]
    # All five start before the first of them finishes.
    assert [type(e) for e in events[:5]] == [NodeStarted] * 5


class _Gauge:
    def __init__(self):
        self.now = 0
        self.peak = 0


_gauge = _Gauge()


@node_type("t-gauge")
async def _gauged(ctx):
    _gauge.now += 1
    _gauge.peak = max(_gauge.peak, _gauge.now)
    await asyncio.sleep(0.001)
    _gauge.now -= 1
    return {}


async def test_concurrency_limit_bounds_running_nodes():
    wf = cellwire.Workflow("bounded")
    wf.add_node("root", "t-value")
    for i in range(12):
        wf.add_node(f"g{i}", "t-gauge", after="root")
    _gauge.peak = 0
    result = await wf.arun(concurrency=3)
    assert result.status == RunStatus.SUCCEEDED
    assert _gauge.peak == 3


@pytest.mark.looptime
async def test_a_node_waiting_for_a_slot_has_not_started():
    """Its start event and its elapsed time begin when it has a slot, as Dify's workers
    start a node when they take it: under concurrency=2, no more than two of six 1 s nodes
    are ever started and unfinished, and each takes 1 s, its wait not included."""
    wf = cellwire.Workflow("rounds")
    wf.add_node("root", "t-value")
    for i in range(6):
        wf.add_node(f"w{i}", "t-value", sleep=1.0, after="root")
    result = await wf.arun(concurrency=2)
    running, most = 0, 0
    for event in result.events:
        if isinstance(event, NodeStarted) and event.node_id.startswith("w"):
            running += 1
            most = max(most, running)
        elif isinstance(event, NodeSucceeded) and event.node_id.startswith("w"):
            running -= 1
    assert most == 2
    elapsed = result.trace.set_index("node_id").loc[[f"w{i}" for i in range(6)], "elapsed_ms"]
    assert elapsed.tolist() == pytest.approx([1000.0] * 6, abs=5)


@pytest.mark.looptime
async def test_retries_back_off_exponentially_with_jitter():
    wf = cellwire.Workflow("retry")
    wf.add_node("flaky", "t-value", value=7, fail_times=3,
                retry=Retry(max_retries=3, interval=1.0, backoff=2.0, max_interval=60))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await wf.arun()
    assert result.status == RunStatus.SUCCEEDED
    retries = [e for e in result.events if isinstance(e, NodeRetry)]
    assert [e.attempt for e in retries] == [1, 2, 3]
    for event, base in zip(retries, [1.0, 2.0, 4.0], strict=True):
        assert base / 2 <= event.delay <= base
    # Virtual time: the run waited exactly the delays it announced.
    # (looptime keeps time in milliseconds)
    assert loop.time() - t0 == pytest.approx(sum(e.delay for e in retries), abs=0.004)
    assert result.trace.loc[0, "retries"] == 3


@pytest.mark.looptime
async def test_retry_after_is_honoured():
    wf = cellwire.Workflow("retry-after")
    wf.add_node("limited", "t-value", fail_times=1, retry_after=30.0,
                retry=Retry(max_retries=1, interval=0.5, max_interval=120))
    result = await wf.arun()
    (retry,) = [e for e in result.events if isinstance(e, NodeRetry)]
    assert retry.delay == 30.0


def test_retry_after_is_capped_and_backoff_capped():
    policy = Retry(max_retries=9, interval=1, backoff=10, max_interval=5, jitter=False)
    assert retry_delay(policy, 4) == 5
    exc = RetryableError("x", retry_after=999)
    assert retry_delay(policy, 1, exc) == 5


async def test_fatal_errors_are_not_retried():
    wf = cellwire.Workflow("fatal")
    wf.add_node("bad", "t-value", fail_times=5, fail_kind="fatal", retry=3)
    result = await wf.arun()
    assert result.status == RunStatus.FAILED
    assert not [e for e in result.events if isinstance(e, NodeRetry)]
    assert "bad request" in result.error and result.error_node == "bad"


@pytest.mark.looptime
async def test_node_timeout_fails_the_attempt_at_the_deadline():
    wf = cellwire.Workflow("timeout")
    wf.add_node("slow", "t-value", sleep=100.0, max_time=2.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await wf.arun()
    assert result.status == RunStatus.FAILED
    (failed,) = [e for e in result.events if isinstance(e, NodeFailed)]
    assert failed.error_type == "NodeTimeout"
    assert "timed out after 2.5 s" in failed.error and "max_time" in failed.error
    assert loop.time() - t0 == pytest.approx(2.5)


async def test_default_value_strategy_continues_and_run_is_partial():
    wf = cellwire.Workflow("default")
    wf.add_node("boom", "t-boom", error_strategy="default-value",
                default_value={"value": "fallback"})
    wf.add_node("end", "end", outputs=[{"variable": "v", "value_selector": ["boom", "value"]},
                                       {"variable": "e", "value_selector": ["boom", "error_message"]}],
                after="boom")
    result = await wf.arun()
    assert result.status == RunStatus.PARTIAL_SUCCEEDED
    assert result.outputs["v"] == "fallback"
    assert "kaboom" in result.outputs["e"]
    assert _statuses(result)["boom"] == "exception"
    assert result.exceptions_count == 1


async def test_fail_branch_takes_the_fail_edge_only():
    wf = cellwire.Workflow("fail-branch")
    wf.add_node("boom", "t-boom", error_strategy="fail-branch")
    wf.add_node("ok_path", "t-value", after="boom")
    wf.add_node("fail_path", "t-value", after=[("boom", "fail-branch")])
    result = await wf.arun()
    assert result.status == RunStatus.PARTIAL_SUCCEEDED
    assert _statuses(result) == {"boom": "exception", "ok_path": "skipped",
                                 "fail_path": "succeeded"}
    (exc,) = [e for e in result.events if isinstance(e, NodeException)]
    assert exc.handle == "fail-branch"


async def test_fail_branch_success_takes_source_edge():
    wf = cellwire.Workflow("fail-branch-ok")
    wf.add_node("fine", "t-value", error_strategy="fail-branch")
    wf.add_node("ok_path", "t-value", after="fine")
    wf.add_node("fail_path", "t-value", after=[("fine", "fail-branch")])
    result = await wf.arun()
    assert _statuses(result) == {"fine": "succeeded", "ok_path": "succeeded",
                                 "fail_path": "skipped"}


async def test_failure_stops_the_run_and_names_the_node_keeping_finished_work():
    wf = cellwire.Workflow("fail")
    wf.add_node("root", "t-value", value="kept")
    wf.add_node("boom", "t-boom", after="root")
    wf.add_node("slow", "t-value", sleep=5, after="root")
    wf.add_node("after", "t-value", after="boom")
    result = await wf.arun()
    assert result.status == RunStatus.FAILED
    assert result.error_node == "boom" and "kaboom" in result.error
    statuses = _statuses(result)
    assert statuses["root"] == "succeeded" and statuses["boom"] == "failed"
    assert statuses["slow"] == "stopped"  # in flight when the run failed: cancelled
    assert "after" not in statuses
    assert result.trace.set_index("node_id").loc["root", "outputs"] == {"value": "kept"}


async def test_stop_cancels_in_flight_nodes():
    wf = cellwire.Workflow("stop")
    wf.add_node("root", "t-value")
    wf.add_node("slow", "t-value", sleep=30, after="root")
    wf.add_node("after", "t-value", after="slow")
    seen = []

    def sink(event):
        seen.append(event)
        if isinstance(event, NodeStarted) and event.node_id == "slow":
            asyncio.get_running_loop().call_soon(execution.stop)

    execution = Execution(CompiledWorkflow(wf), {}, Runtime(layers=[sink]))
    result = await asyncio.wait_for(execution.run(), 5)
    assert result.status == RunStatus.STOPPED
    assert any(isinstance(e, NodeStopped) and e.node_id == "slow" for e in seen)
    assert "after" not in _statuses(result)


async def test_external_cancellation_propagates():
    wf = cellwire.Workflow("cancel")
    wf.add_node("slow", "t-value", sleep=30)
    task = asyncio.ensure_future(wf.arun())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_max_steps_limit():
    wf = cellwire.Workflow("steps")
    prev = None
    for i in range(6):
        wf.add_node(f"n{i}", "t-value", after=prev)
        prev = f"n{i}"
    result = await wf.arun(max_steps=4)
    assert result.status == RunStatus.FAILED
    assert "max_steps=4" in result.error


@pytest.mark.looptime
async def test_max_time_limit():
    wf = cellwire.Workflow("time")
    wf.add_node("slow", "t-value", sleep=100)
    result = await wf.arun(max_time=10)
    assert result.status == RunStatus.FAILED
    assert "max_time=10" in result.error


async def test_missing_required_input_fails_before_any_node_runs():
    wf = cellwire.Workflow("inputs")
    wf.add_node("start", "start", variables=[{"variable": "q", "required": True}])
    wf.add_node("a", "t-value", after="start")
    result = await wf.arun()
    assert result.status == RunStatus.FAILED
    assert "node 'start' field 'variables.q'" in result.error
    assert not [e for e in result.events if isinstance(e, NodeStarted)]


async def test_invalid_workflow_raises_with_problems():
    wf = cellwire.Workflow("bad")
    wf.add_node("a", "no-such-type")
    with pytest.raises(cellwire.WorkflowError) as info:
        await wf.arun()
    assert info.value.problems[0].node_id == "a"
    assert info.value.problems[0].field == "type"


async def test_sys_inputs_and_plain_templates():
    @node_type("t-echo-sys")
    async def echo(ctx):
        return {"text": ctx.render("{{#sys.query#}} / {{ sys.query }}"),
                "jinja": await ctx.render_jinja("{{ sys.query }}!", field="text")}

    wf = cellwire.Workflow("sys")
    wf.add_node("e", "t-echo-sys")
    result = await wf.arun({"sys.query": "hi"})
    # A plain field replaces Dify references only; Jinja runs only when asked for.
    assert result.trace.loc[0, "outputs"] == {"text": "hi / {{ sys.query }}", "jinja": "hi!"}


async def test_event_loop_stays_free_while_a_node_awaits():
    wf = cellwire.Workflow("free")
    wf.add_node("slow", "t-value", sleep=0.05)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.ensure_future(ticker())
    await wf.arun()
    tick_task.cancel()
    assert ticks >= 3


def test_run_works_from_sync_code_and_inside_a_running_loop():
    wf = cellwire.Workflow("sync")
    wf.add_node("a", "t-value", value=3)
    assert wf.run().status == RunStatus.SUCCEEDED

    async def inside():
        return wf.run()

    assert asyncio.run(inside()).status == RunStatus.SUCCEEDED


def test_state_machines_reject_illegal_moves():
    assert check_run_move(RunStatus.PENDING, RunStatus.RUNNING) == RunStatus.RUNNING
    with pytest.raises(IllegalTransition):
        check_run_move(RunStatus.SUCCEEDED, RunStatus.RUNNING)
    with pytest.raises(IllegalTransition):
        check_node_move("n", NodeStatus.SKIPPED, NodeStatus.RUNNING)
    with pytest.raises(IllegalTransition):
        check_node_move("n", NodeStatus.PENDING, NodeStatus.SUCCEEDED)


async def test_jitter_uses_the_given_rng():
    policy = Retry(max_retries=3, interval=4.0)
    delays = {retry_delay(policy, 1, rng=random.Random(seed)) for seed in range(20)}
    assert len(delays) > 1 and all(2.0 <= d <= 4.0 for d in delays)


async def test_skipped_events_for_unreachable_nodes():
    wf = cellwire.Workflow("unreachable")
    wf.add_node("start", "start")
    wf.add_node("island", "t-value")
    result = await wf.arun()
    assert [e.node_id for e in result.events if isinstance(e, NodeSkipped)] == ["island"]


async def test_fatal_node_errors_skip_retries():
    @node_type("t-bad-config")
    async def bad(ctx):
        raise cellwire.NodeError("no such model", field="model", hint="pick one", fatal=True)

    wf = cellwire.Workflow("fatal-node-error")
    wf.add_node("bad", "t-bad-config", retry=3)
    result = await wf.arun()
    assert result.status == RunStatus.FAILED
    assert not [e for e in result.events if isinstance(e, NodeRetry)]
    assert "field 'model': no such model (fix: pick one)" in result.error


async def test_run_from_a_node_reuses_the_previous_run_upstream():
    wf = cellwire.Workflow("rerun")
    wf.add_node("a", "t-value", value="A")
    wf.add_node("side", "t-value", value="S")
    wf.add_node("pick", "t-pick", handle="a", after="a")
    wf.add_node("on_a", "t-value", value="took a", after=[("pick", "a")])
    wf.add_node("on_b", "t-value", value="took b", after=[("pick", "b")])
    wf.add_node("join", "t-value", after=["on_a", "on_b", "side"])
    wf.add_node("end", "end", after="join", outputs=[
        {"variable": "a", "value_selector": ["a", "value"]},
        {"variable": "via", "value_selector": ["on_b", "value"]},
    ])
    first = await Execution(CompiledWorkflow(wf), {}, Runtime()).run()
    assert first.outputs == {"a": "A", "via": None}

    wf.update_node("pick", handle="b")
    again = await Execution(CompiledWorkflow(wf), {}, Runtime(), start_at="pick",
                            previous=first).run()
    assert again.status == RunStatus.SUCCEEDED
    started = [e.node_id for e in again.events if isinstance(e, NodeStarted)]
    # Upstream nodes are not run again; the join still counts the edge from `side`.
    assert started[0] == "pick" and "a" not in started and "side" not in started
    assert _statuses(again) == {"pick": "succeeded", "on_a": "skipped", "on_b": "succeeded",
                                "join": "succeeded", "end": "succeeded"}
    assert again.outputs == {"a": "A", "via": "took b"}


async def test_a_single_node_reruns_alone_on_the_previous_run_s_values():
    wf = cellwire.Workflow("rerun-one")
    wf.add_node("a", "t-value", value="A")
    wf.add_node("mid", "template-transform", after="a", template="{{ x }}-1",
                variables=[{"variable": "x", "value_selector": ["a", "value"]}])
    wf.add_node("end", "end", after="mid", outputs=[
        {"variable": "mid", "value_selector": ["mid", "output"]}])
    first = await Execution(CompiledWorkflow(wf), {}, Runtime()).run()
    assert first.outputs == {"mid": "A-1"}

    wf.update_node("mid", template="{{ x }}-2")
    wf.update_node("a", value="not run")
    again = await Execution(CompiledWorkflow(wf), {}, Runtime(), start_at="mid",
                            previous=first, single=True).run()
    assert again.status == RunStatus.SUCCEEDED
    # Only `mid` ran, on `a`'s value from the first run; `end` after it did not.
    assert [e.node_id for e in again.events if isinstance(e, NodeStarted)] == ["mid"]
    (done,) = [e for e in again.events if isinstance(e, NodeSucceeded)]
    assert done.outputs == {"output": "A-2"}
    assert again.outputs == {"mid": "A-1"}  # the end node's outputs stay the previous run's
    with pytest.raises(ValueError, match="give start_at"):
        Execution(CompiledWorkflow(wf), {}, Runtime(), single=True)


async def test_concurrency_slots_hand_over_and_survive_cancelled_waiters():
    from cellwire.engine.scheduler import Slots as _Slots

    slots = _Slots(1)
    await slots.acquire()
    waiter = asyncio.ensure_future(slots.acquire())
    cancelled = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    slots.release()  # goes to the first waiter, skipping nothing
    await asyncio.wait_for(waiter, 1)
    assert slots.free == 0
    slots.release()
    assert slots.free == 1 and not slots.waiters


_turns: list[int] = []
_begun: list[str] = []


@node_type("t-first-step")
async def _first_step(ctx):
    """Notes that it began; the first one asks the event loop to note how many had begun by
    its next turn (a connection opened in a first step is usable from then on)."""
    if not _begun:
        asyncio.get_running_loop().call_soon(lambda: _turns.append(len(_begun)))
    _begun.append(ctx.node.id)
    await asyncio.sleep(0.001)
    return {}


async def test_a_wide_fan_out_starts_in_batches_so_the_first_nodes_io_goes_out_early():
    """200 ready nodes do not all take their first step before the loop's next turn: before,
    an llm node's request could only leave once the last of 200 had opened its connection.
    All of them still run, in their order, and at once (200 in flight)."""
    wf = cellwire.Workflow("wide")
    wf.add_node("root", "t-value")
    ids = [f"n{i:03d}" for i in range(200)]
    for node_id in ids:
        wf.add_node(node_id, "t-first-step", after="root")
    wf.add_node("join", "t-value", after=ids)
    _turns.clear()
    _begun.clear()
    result = await wf.arun(store=False)
    assert result.status == RunStatus.SUCCEEDED
    assert _begun == ids
    assert _turns and _turns[0] < 50, _turns


async def test_nodes_waiting_to_start_do_not_start_after_the_run_failed():
    wf = cellwire.Workflow("wide-fail")
    wf.add_node("root", "t-value")
    wf.add_node("boom", "t-boom", after="root")
    for i in range(200):
        wf.add_node(f"n{i:03d}", "t-first-step", after="root")
    _turns.clear()
    _begun.clear()
    result = await wf.arun(store=False)
    assert result.status == RunStatus.FAILED
    await asyncio.sleep(0.01)  # a batch still queued would start on these turns
    started = {e.node_id for e in result.events if isinstance(e, NodeStarted)}
    assert len(_begun) < 200 and started >= set(_begun)
