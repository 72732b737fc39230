"""Iteration and loop containers: rounds, order, concurrency, error modes, loop variables."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cellwire
from cellwire.engine import CompiledWorkflow, Execution
from cellwire.engine.events import (
    ContainerCompleted,
    ContainerNext,
    ContainerStarted,
    NodeFailed,
    NodeStarted,
    NodeStopped,
    NodeSucceeded,
    StreamChunk,
)
from cellwire.model import NodeConfig, node_type
from cellwire.nodes.loop import constant

# -- small node types for the sub-graphs --------------------------------------------------


class DoubleConfig(NodeConfig):
    selector: list[str]
    fail_on: Any = None
    as_list: bool = False


@node_type("ctr-double", config=DoubleConfig, outputs=["value"])
async def _double(ctx):
    """Doubles the value at ``selector``; fails when it equals ``fail_on``."""
    value = ctx.get(ctx.config.selector)
    if ctx.config.fail_on is not None and value == ctx.config.fail_on:
        raise ValueError(f"cannot take {value}")
    doubled = value * 2
    return {"value": [doubled, doubled] if ctx.config.as_list else doubled}


class IterConfig(NodeConfig):
    iteration: str


_finished: dict[tuple[str, int], asyncio.Event] = {}


@node_type("ctr-reverse", config=IterConfig, outputs=["value"])
async def _reverse(ctx):
    """Round i waits until round i+1 has finished, so the last item finishes first."""
    index = ctx.get([ctx.config.iteration, "index"])
    total = len(ctx.get(["start", "items"]))
    mine = _finished.setdefault((ctx.run_id, index), asyncio.Event())
    if index + 1 < total:
        await _finished.setdefault((ctx.run_id, index + 1), asyncio.Event()).wait()
    mine.set()
    return {"value": ctx.get([ctx.config.iteration, "item"])}


_active: dict[str, int] = {}
_peak: dict[str, int] = {}


@node_type("ctr-probe", config=IterConfig, outputs=["value"])
async def _probe(ctx):
    """Counts how many rounds run this node at the same moment."""
    run = ctx.run_id
    _active[run] = _active.get(run, 0) + 1
    _peak[run] = max(_peak.get(run, 0), _active[run])
    try:
        # Yield a few times so every round that may start does start before this one ends.
        for _ in range(5):
            await asyncio.sleep(0)
    finally:
        _active[run] -= 1
    return {"value": ctx.get([ctx.config.iteration, "index"])}


@node_type("ctr-block")
async def _block(ctx):
    """Never finishes on its own: only cancellation ends it."""
    await asyncio.Event().wait()


class SetConfig(NodeConfig):
    target: list[str]
    op: str = "add"
    operand: Any = 1
    operand_selector: list[str] | None = None


@node_type("ctr-set", config=SetConfig, outputs=[])
async def _set(ctx):
    """Updates a loop variable in place: ``add`` a number or ``append`` a value."""
    node_id, name = ctx.config.target
    current = ctx.get(ctx.config.target)
    operand = ctx.config.operand
    if ctx.config.operand_selector:
        operand = ctx.get(ctx.config.operand_selector)
    new = current + operand if ctx.config.op == "add" else [*current, operand]
    ctx.pool.set(node_id, name, new)
    return {}


class WhenConfig(NodeConfig):
    selector: list[str]
    at_least: float


@node_type("ctr-when", config=WhenConfig, outputs=[], handles=["yes", "no"])
async def _when(ctx):
    """A branch: 'yes' once the value at ``selector`` reaches ``at_least``."""
    handle = "yes" if ctx.get(ctx.config.selector) >= ctx.config.at_least else "no"
    return cellwire.NodeResult(handle=handle)


class PeekConfig(NodeConfig):
    node: str


@node_type("ctr-peek", config=PeekConfig, outputs=["seen"])
async def _peek(ctx):
    """Reports whether ``node`` already has outputs in the pool."""
    return {"seen": ctx.pool.outputs(ctx.config.node) is not None}


class SayConfig(NodeConfig):
    text: str


@node_type("ctr-say", config=SayConfig, outputs=["text"])
async def _say(ctx):
    """Streams its rendered text, as an answer node does."""
    text = ctx.render(ctx.config.text)
    await ctx.stream(text)
    return {"text": text}


# -- helpers ----------------------------------------------------------------------------------


def iteration_workflow(items_node: str = "double", *, end_selector: list[str] | None = None,
                       **iteration: Any) -> cellwire.Workflow:
    """start(items) -> it[its -> <inner>] -> end(out = it.output)."""
    wf = cellwire.Workflow("iter")
    wf.add_node("start", "start", variables=[{"variable": "items", "type": "json_object"}])
    config = {"iterator_selector": ["start", "items"], "output_selector": ["inner", "value"],
              "start_node_id": "its", **iteration}
    wf.add_node("it", "iteration", after="start", **config)
    wf.add_node("its", "iteration-start", parent="it")
    wf.add_node("end", "end", after="it",
                outputs=[{"variable": "out", "value_selector": end_selector or ["it", "output"]}])
    return wf


def of(result, kind: type, node_id: str | None = None) -> list:
    return [e for e in result.events
            if type(e) is kind and (node_id is None or e.node_id == node_id)]


def loop_workflow(**loop: Any) -> cellwire.Workflow:
    """start -> lp[ls -> ...] -> end(n = lp.n, rounds = lp.loop_round)."""
    wf = cellwire.Workflow("loop")
    wf.add_node("start", "start", variables=[{"variable": "first", "type": "number"}])
    config = {"loop_count": 10, "start_node_id": "ls",
              "loop_variables": [{"label": "n", "var_type": "number", "value_type": "constant",
                                  "value": 0}],
              **loop}
    wf.add_node("lp", "loop", after="start", **config)
    wf.add_node("ls", "loop-start", parent="lp")
    wf.add_node("end", "end", after="lp", outputs=[
        {"variable": "n", "value_selector": ["lp", "n"]},
        {"variable": "rounds", "value_selector": ["lp", "loop_round"]},
    ])
    return wf


def reach(selector: list[str], value: Any, op: str = "≥") -> dict[str, Any]:
    return {"variable_selector": selector, "comparison_operator": op, "value": value}


# -- iteration ------------------------------------------------------------------------------


async def test_sequential_iteration_runs_each_item_in_order():
    wf = iteration_workflow()
    wf.add_node("inner", "ctr-double", parent="it", after="its", selector=["it", "item"])
    wf.add_node("idx", "ctr-double", parent="it", after="its", selector=["it", "index"])

    result = await wf.arun(items=[1, 2, 3])

    assert result.status == "succeeded", result.error
    assert result.outputs == {"out": [2, 4, 6]}
    started = of(result, ContainerStarted, "it")
    assert [(e.kind, e.total) for e in started] == [("iteration", 3)]
    assert [e.index for e in of(result, ContainerNext, "it")] == [0, 1, 2]
    completed = of(result, ContainerCompleted, "it")
    assert [(e.rounds, e.reason) for e in completed] == [(3, "completed")]
    # Sequential: round i's nodes all finish before round i+1 starts.
    rounds = [e.round for e in of(result, NodeSucceeded, "inner")]
    assert rounds == [0, 1, 2]
    assert [e.outputs["value"] for e in of(result, NodeSucceeded, "idx")] == [0, 2, 4]
    trace = result.trace
    inner = trace[trace.node_id == "inner"]
    assert set(inner.parent_id) == {"it"} and sorted(inner["round"]) == [0, 1, 2]
    (it_done,) = of(result, NodeSucceeded, "it")
    assert set(it_done.metadata["iteration_duration_map"]) == {"0", "1", "2"}
    assert it_done.inputs == {"iterator_selector": [1, 2, 3]}


async def test_parallel_iteration_keeps_item_order_when_later_items_finish_first():
    wf = iteration_workflow(is_parallel=True, parallel_nums=4)
    wf.add_node("inner", "ctr-reverse", parent="it", after="its", iteration="it")

    result = await wf.arun(items=["a", "b", "c", "d"])

    assert result.status == "succeeded", result.error
    assert [e.round for e in of(result, NodeSucceeded, "inner")] == [3, 2, 1, 0]
    assert result.outputs == {"out": ["a", "b", "c", "d"]}
    # Every round started (in item order) before any could finish.
    assert [e.index for e in of(result, ContainerNext, "it")] == [0, 1, 2, 3]
    names = [(e.name, getattr(e, "node_id", None)) for e in result.events]
    first_done = names.index(("node_succeeded", "inner"))
    assert names.index(("container_next", "it"), 0) < first_done
    assert sum(1 for n in names[:first_done] if n == ("container_next", "it")) == 4


@pytest.mark.parametrize(
    ("is_parallel", "parallel_nums", "peak"),
    [(False, 10, 1), (True, 1, 1), (True, 3, 3), (True, 20, 9)],
)
async def test_parallel_nums_bounds_concurrent_rounds(is_parallel, parallel_nums, peak):
    wf = iteration_workflow(is_parallel=is_parallel, parallel_nums=parallel_nums)
    wf.add_node("inner", "ctr-probe", parent="it", after="its", iteration="it")

    result = await wf.arun(items=list(range(9)))

    assert result.status == "succeeded", result.error
    assert _peak[result.run_id] == peak
    assert result.outputs == {"out": list(range(9))}


@pytest.mark.parametrize("is_parallel", [False, True])
@pytest.mark.parametrize(
    ("mode", "expected"),
    [("continue-on-error", [2, None, 6, 8]), ("remove-abnormal-output", [2, 6, 8])],
)
async def test_error_handle_modes_that_carry_on(mode, expected, is_parallel):
    wf = iteration_workflow(error_handle_mode=mode, is_parallel=is_parallel)
    wf.add_node("inner", "ctr-double", parent="it", after="its", selector=["it", "item"],
                fail_on=2)

    result = await wf.arun(items=[1, 2, 3, 4])

    assert result.status == "succeeded", result.error
    assert result.outputs == {"out": expected}
    (failed,) = of(result, NodeFailed, "inner")
    assert failed.round == 1 and "cannot take 2" in failed.error
    (it_done,) = of(result, NodeSucceeded, "it")
    assert list(it_done.metadata["errors"]) == ["1"]


async def test_terminated_mode_fails_the_iteration_at_the_first_failed_item():
    wf = iteration_workflow()  # error_handle_mode defaults to terminated
    wf.add_node("inner", "ctr-double", parent="it", after="its", selector=["it", "item"],
                fail_on=2)

    result = await wf.arun(items=[1, 2, 3])

    assert result.status == "failed"
    assert result.error_node == "it"
    assert "item 1 failed" in result.error and "cannot take 2" in result.error
    assert "error_handle_mode" in result.error
    assert [e.round for e in of(result, NodeSucceeded, "inner")] == [0]  # item 3 never ran
    assert [e.reason for e in of(result, ContainerCompleted, "it")] == ["error"]
    assert of(result, NodeSucceeded, "end") == []


async def test_terminated_parallel_iteration_cancels_the_rounds_still_running():
    wf = iteration_workflow(is_parallel=True, parallel_nums=4)
    wf.add_node("inner", "ctr-double", parent="it", after="its", selector=["it", "item"],
                fail_on=0)
    wf.add_node("wait", "ctr-block", parent="it", after="its")

    result = await wf.arun(items=[0, 1, 2], max_time=10)

    assert result.status == "failed"
    assert "item 0 failed" in result.error
    stopped = of(result, NodeStopped, "wait")
    assert sorted(e.round for e in stopped) == [0, 1, 2]


@pytest.mark.parametrize(
    ("flatten", "as_list", "expected"),
    [
        (True, True, [2, 2, 4, 4]),
        (False, True, [[2, 2], [4, 4]]),
        (True, False, [2, 4]),
    ],
)
async def test_flatten_output_joins_list_outputs_one_level(flatten, as_list, expected):
    wf = iteration_workflow(flatten_output=flatten)
    wf.add_node("inner", "ctr-double", parent="it", after="its", selector=["it", "item"],
                as_list=as_list)

    result = await wf.arun(items=[1, 2])

    assert result.outputs == {"out": expected}


async def test_flatten_leaves_mixed_outputs_alone():
    wf = iteration_workflow()
    wf.add_node("inner", "ctr-double", parent="it", after="its", selector=["it", "item"])

    result = await wf.arun(items=[[1], "ab"])

    assert result.outputs == {"out": [[1, 1], "abab"]}


async def test_empty_or_null_iterator_gives_an_empty_output_without_rounds():
    wf = iteration_workflow()
    wf.add_node("inner", "ctr-double", parent="it", after="its", selector=["it", "item"])

    for items in ([], None):
        result = await wf.arun(items=items)
        assert result.status == "succeeded", result.error
        assert result.outputs == {"out": []}
        assert of(result, NodeSucceeded, "inner") == []


async def test_a_non_array_iterator_fails_naming_the_field():
    wf = iteration_workflow()
    wf.add_node("inner", "ctr-double", parent="it", after="its", selector=["it", "item"])

    result = await wf.arun(items={"a": 1})

    assert result.status == "failed"
    assert "iterator_selector" in result.error and "not an array" in result.error


async def test_rounds_do_not_see_each_others_outputs():
    wf = iteration_workflow(output_selector=["peek", "seen"])
    wf.add_node("peek", "ctr-peek", parent="it", after="its", node="inner")
    wf.add_node("inner", "ctr-double", parent="it", after="peek", selector=["it", "item"])

    result = await wf.arun(items=[1, 2, 3])

    assert result.outputs == {"out": [False, False, False]}


async def test_nested_iterations_see_both_items():
    wf = iteration_workflow(output_selector=["inner_it", "output"])
    wf.add_node("inner_it", "iteration", parent="it", after="its",
                iterator_selector=["it", "item"], output_selector=["inner", "value"])
    wf.add_node("iits", "iteration-start", parent="inner_it")
    wf.add_node("inner", "ctr-double", parent="inner_it", after="iits",
                selector=["inner_it", "item"])

    result = await wf.arun(items=[[1, 2], [3]])

    assert result.status == "succeeded", result.error
    # Each outer round's output is a list, so the outer output is flattened.
    assert result.outputs == {"out": [2, 4, 6]}
    inner = of(result, NodeSucceeded, "inner")
    assert [(e.parent_id, e.round) for e in inner] == [("inner_it", 0), ("inner_it", 1),
                                                       ("inner_it", 0)]


async def test_streamed_text_inside_an_iteration_comes_once_per_round():
    wf = iteration_workflow(output_selector=["inner", "text"], is_parallel=True)
    wf.add_node("inner", "ctr-say", parent="it", after="its", text="{{#it.item#}};")

    result = await wf.arun(items=["a", "b", "c"])

    chunks = sorted((e.round, e.text) for e in of(result, StreamChunk, "inner"))
    assert chunks == [(0, "a;"), (1, "b;"), (2, "c;")]
    assert {e.parent_id for e in of(result, StreamChunk, "inner")} == {"it"}
    assert result.outputs == {"out": ["a;", "b;", "c;"]}


# -- loop -------------------------------------------------------------------------------------


async def test_loop_stops_when_its_break_condition_holds():
    wf = loop_workflow(break_conditions=[reach(["lp", "n"], 3)])
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"])

    result = await wf.arun(first=0)

    assert result.status == "succeeded", result.error
    assert result.outputs == {"n": 3, "rounds": 3}
    assert [e.index for e in of(result, ContainerNext, "lp")] == [0, 1, 2]
    (done,) = of(result, NodeSucceeded, "lp")
    assert done.metadata["completed_reason"] == "loop_break"
    assert done.metadata["loop_variable_map"] == {"0": {"n": 1}, "1": {"n": 2}, "2": {"n": 3}}
    assert [(e.rounds, e.reason) for e in of(result, ContainerCompleted, "lp")] == [
        (3, "loop_break")]
    assert [e.round for e in of(result, NodeSucceeded, "inc")] == [0, 1, 2]


async def test_loop_count_caps_the_rounds():
    wf = loop_workflow(loop_count=4, break_conditions=[reach(["lp", "n"], 100)])
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"], operand=5)

    result = await wf.arun(first=0)

    assert result.outputs == {"n": 20, "rounds": 4}
    (done,) = of(result, NodeSucceeded, "lp")
    assert done.metadata["completed_reason"] == "loop_completed"
    assert done.outputs["index"] == 3


async def test_loop_without_break_conditions_runs_loop_count_rounds():
    wf = loop_workflow(loop_count=2)
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"])

    result = await wf.arun(first=0)

    assert result.outputs == {"n": 2, "rounds": 2}


async def test_a_break_condition_already_true_runs_no_round():
    wf = loop_workflow(break_conditions=[reach(["lp", "n"], 0)])
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"])

    result = await wf.arun(first=0)

    assert result.outputs == {"n": 0, "rounds": 0}
    assert of(result, NodeSucceeded, "inc") == []


async def test_break_condition_on_an_inner_output_is_checked_after_each_round():
    # Before the first round the inner node has no output yet: the condition does not hold.
    wf = loop_workflow(break_conditions=[reach(["dbl", "value"], 6)])
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"])
    wf.add_node("dbl", "ctr-double", parent="lp", after="inc", selector=["lp", "n"])

    result = await wf.arun(first=0)

    assert result.outputs == {"n": 3, "rounds": 3}


async def test_loop_end_node_ends_the_loop_after_its_round():
    wf = loop_workflow(loop_count=10)
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"])
    wf.add_node("check", "ctr-when", parent="lp", after="inc", selector=["lp", "n"], at_least=2)
    wf.add_node("stop", "loop-end", parent="lp", after=[("check", "yes")])
    wf.add_node("more", "ctr-set", parent="lp", after=[("check", "no")], target=["lp", "n"],
                operand=10)

    result = await wf.arun(first=0)

    # Round 0: n 0 -> 1 -> 11 (no); round 1: 11 -> 12 (yes) and the loop-end node stops it.
    assert result.outputs == {"n": 12, "rounds": 2}
    (done,) = of(result, NodeSucceeded, "lp")
    assert done.metadata["completed_reason"] == "loop_break"
    assert [e.round for e in of(result, NodeSucceeded, "stop")] == [1]


async def test_loop_variables_start_from_variables_and_constants_and_update_each_round():
    wf = loop_workflow(
        loop_count=3,
        loop_variables=[
            {"label": "n", "var_type": "number", "value_type": "variable",
             "value": ["start", "first"]},
            {"label": "seen", "var_type": "array[number]", "value_type": "constant",
             "value": "[]"},
        ],
    )
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"])
    wf.add_node("log", "ctr-set", parent="lp", after="inc", target=["lp", "seen"], op="append",
                operand_selector=["lp", "n"])
    wf.update_node("end", outputs=[{"variable": "seen", "value_selector": ["lp", "seen"]},
                                   {"variable": "n", "value_selector": ["lp", "n"]}])

    result = await wf.arun(first=10)

    assert result.status == "succeeded", result.error
    assert result.outputs == {"seen": [11, 12, 13], "n": 13}
    (done,) = of(result, NodeSucceeded, "lp")
    assert done.inputs == {"loop_count": 3, "n": 10, "seen": []}
    assert done.metadata["loop_variable_map"]["1"] == {"n": 12, "seen": [11, 12]}


async def test_loop_index_is_readable_inside_and_inner_outputs_are_cleared_each_round():
    wf = loop_workflow(loop_count=3, loop_variables=[
        {"label": "acc", "var_type": "array[object]", "value_type": "constant", "value": []}])
    wf.add_node("peek", "ctr-peek", parent="lp", after="ls", node="dbl")
    wf.add_node("dbl", "ctr-double", parent="lp", after="peek", selector=["lp", "index"])
    wf.add_node("log", "ctr-set", parent="lp", after="dbl", target=["lp", "acc"], op="append",
                operand_selector=["peek", "seen"])
    wf.add_node("log2", "ctr-set", parent="lp", after="log", target=["lp", "acc"], op="append",
                operand_selector=["dbl", "value"])
    wf.update_node("end", outputs=[{"variable": "acc", "value_selector": ["lp", "acc"]}])

    result = await wf.arun(first=0)

    assert result.outputs == {"acc": [False, 0, False, 2, False, 4]}


async def test_a_failing_inner_node_fails_the_loop_naming_the_round():
    wf = loop_workflow(loop_count=5)
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"])
    wf.add_node("dbl", "ctr-double", parent="lp", after="inc", selector=["lp", "n"], fail_on=2)

    result = await wf.arun(first=0)

    assert result.status == "failed"
    assert result.error_node == "lp"
    assert "round 1 failed" in result.error and "cannot take 2" in result.error
    assert [e.reason for e in of(result, ContainerCompleted, "lp")] == ["error"]


async def test_a_bad_loop_variable_constant_fails_naming_the_field():
    wf = loop_workflow(loop_variables=[
        {"label": "n", "var_type": "number", "value_type": "constant", "value": "many"}])

    result = await wf.arun(first=0)

    assert result.status == "failed"
    assert "loop_variables[0].value" in result.error and "'many'" in result.error


def test_constants_convert_like_dify():
    assert constant("number", "3") == 3
    assert constant("number", "2.5") == 2.5
    assert constant("boolean", "true") is True
    assert constant("object", '{"a": 1}') == {"a": 1}
    assert constant("array[string]", '["x"]') == ["x"]
    assert constant("array[number]", None) == []
    assert constant("string", "") == ""


async def test_iteration_nested_in_a_loop_reruns_each_round():
    wf = loop_workflow(loop_count=3, loop_variables=[
        {"label": "acc", "var_type": "array[object]", "value_type": "constant", "value": []}])
    wf.update_node("start", variables=[{"variable": "items", "type": "json_object"}])
    wf.add_node("it", "iteration", parent="lp", after="ls", iterator_selector=["start", "items"],
                output_selector=["dbl", "value"], is_parallel=True)
    wf.add_node("its", "iteration-start", parent="it")
    wf.add_node("dbl", "ctr-double", parent="it", after="its", selector=["it", "item"])
    wf.add_node("log", "ctr-set", parent="lp", after="it", target=["lp", "acc"], op="append",
                operand_selector=["it", "output"])
    wf.update_node("end", outputs=[{"variable": "acc", "value_selector": ["lp", "acc"]},
                                   {"variable": "rounds", "value_selector": ["lp", "loop_round"]}])

    result = await wf.arun(items=[1, 2])

    assert result.status == "succeeded", result.error
    assert result.outputs == {"acc": [[2, 4], [2, 4], [2, 4]], "rounds": 3}
    rows = result.trace
    dbl = rows[rows.node_id == "dbl"]
    assert len(dbl) == 6 and set(dbl.parent_id) == {"it"}
    it_rows = rows[rows.node_id == "it"]
    assert list(it_rows.parent_id) == ["lp"] * 3 and list(it_rows["round"]) == [0, 1, 2]
    assert [e.parent_id for e in of(result, ContainerStarted, "it")] == ["lp"] * 3


async def test_assigner_updates_loop_variables():
    """With the built-in assigner node, when it is there."""
    if cellwire.model.registry.find("assigner") is None:
        pytest.skip("the assigner node is not built in yet")
    wf = loop_workflow(loop_count=4)
    wf.add_node("inc", "assigner", parent="lp", after="ls", version="2", items=[
        {"variable_selector": ["lp", "n"], "input_type": "constant", "operation": "+=",
         "value": 2}])

    result = await wf.arun(first=0)

    assert result.status == "succeeded", result.error
    assert result.outputs == {"n": 8, "rounds": 4}


async def test_answer_nodes_inside_containers_answer_once_per_round():
    """With the built-in answer node, when it is there."""
    if cellwire.model.registry.find("answer") is None:
        pytest.skip("the answer node is not built in yet")
    wf = iteration_workflow(output_selector=["say", "answer"])
    wf.add_node("say", "answer", parent="it", after="its", answer="{{#it.item#}};")
    wf.add_node("lp", "loop", after="it", loop_count=3, loop_variables=[
        {"label": "n", "var_type": "number", "value_type": "constant", "value": 0}])
    wf.add_node("ls", "loop-start", parent="lp")
    wf.add_node("inc", "ctr-set", parent="lp", after="ls", target=["lp", "n"])
    wf.add_node("tell", "answer", parent="lp", after="inc", answer="{{#lp.n#}},")
    wf.connect("lp", "end")

    result = await wf.arun(items=["a", "b", "c"])

    assert result.status == "succeeded", result.error
    assert result.outputs == {"out": ["a;", "b;", "c;"]}
    assert result.answer == "a;b;c;1,2,3,"
    assert [e.round for e in of(result, StreamChunk, "tell")] == [0, 1, 2]


@pytest.mark.parametrize("container", ["iteration", "loop"])
async def test_stopping_the_run_stops_the_container_mid_round(container):
    if container == "iteration":
        wf = iteration_workflow(is_parallel=True)
        wf.add_node("inner", "ctr-block", parent="it", after="its")
        box = "it"
    else:
        wf = loop_workflow()
        wf.add_node("inner", "ctr-block", parent="lp", after="ls")
        box = "lp"
    execution: list[Execution] = []

    def stop_when_blocked(event):
        if type(event) is NodeStarted and event.node_id == "inner":
            execution[0].stop("enough")

    runtime = cellwire.Runtime(layers=[stop_when_blocked])
    inputs = {k: v for k, v in {"items": [1, 2], "first": 0}.items() if k in _declared(wf)}
    execution.append(Execution(CompiledWorkflow(wf), inputs, runtime))
    result = await asyncio.wait_for(execution[0].run(), 10)

    assert result.status == "stopped"
    assert [e.reason for e in of(result, ContainerCompleted, box)] == ["stopped"]
    assert of(result, NodeStopped, "inner")


def _declared(wf: cellwire.Workflow) -> set[str]:
    """The start inputs ``wf`` declares (a run refuses any other)."""
    return {v["variable"] for v in wf.nodes["start"].config.get("variables") or []}
