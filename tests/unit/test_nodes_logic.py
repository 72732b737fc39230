"""variable-aggregator, assigner and list-operator, through real runs of small workflows."""

from __future__ import annotations

from typing import Any

import pytest

import cellwire
from cellwire.engine import RunStatus
from cellwire.model import ConversationVariable, NodeConfig, node_type


class ConstConfig(NodeConfig):
    value: Any = None
    other: Any = None


@node_type("logic-const", config=ConstConfig, outputs=["value", "other"])
async def _const(ctx):
    """Test helper: outputs its configured values."""
    return {"value": ctx.config.value, "other": ctx.config.other}


def _start(wf: cellwire.Workflow, **values: Any) -> None:
    """A start node declaring each value; non-strings pass through unchanged (json_object)."""
    wf.add_node("start", "start", variables=[
        {"variable": k, "type": "text-input" if isinstance(v, str) else "json_object"}
        for k, v in values.items()
    ])


def _outputs(result: cellwire.RunResult, node_id: str) -> Any:
    return result.trace.set_index("node_id").loc[node_id, "outputs"]


def _branching(route_to: str) -> cellwire.Workflow:
    """start -> if-else -> a | b, so exactly one of a and b runs."""
    wf = cellwire.Workflow("agg")
    wf.add_node("start", "start", variables=[{"variable": "route", "type": "text-input"}])
    wf.add_node("check", "if-else", after="start", cases=[{"case_id": "a", "conditions": [
        {"variable_selector": ["start", "route"], "comparison_operator": "is", "value": "a"}]}])
    wf.add_node("a", "logic-const", value="from a", other={"n": 1}, after=[("check", "a")])
    wf.add_node("b", "logic-const", value="from b", other={"n": 2}, after=[("check", "false")])
    return wf


# -- variable-aggregator ------------------------------------------------------------------

@pytest.mark.parametrize(("route", "want"), [("a", "from a"), ("b", "from b")])
async def test_aggregator_passes_on_the_branch_that_ran(route: str, want: str):
    wf = _branching(route)
    wf.add_node("agg", "variable-aggregator", after=["a", "b"], output_type="string",
                variables=[["a", "value"], ["b", "value"]])
    wf.add_node("end", "end", after="agg",
                outputs=[{"variable": "out", "value_selector": ["agg", "output"]}])
    result = await wf.arun(route=route)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.node_status("a" if route == "b" else "b") == "skipped"
    assert result.outputs == {"out": want}


async def test_aggregator_takes_the_first_value_in_order_and_none_when_nothing_ran():
    wf = cellwire.Workflow("order")
    wf.add_node("x", "logic-const", value=None, other="x-other")
    wf.add_node("y", "logic-const", value="y", other="y-other")
    wf.add_node("first", "variable-aggregator", after=["x", "y"],
                variables=[["x", "value"], ["y", "value"], ["x", "other"]])
    wf.add_node("none", "variable-aggregator", after=["x"], variables=[["x", "value"]])
    result = await wf.arun()
    assert _outputs(result, "first") == {"output": "y"}
    assert _outputs(result, "none") == {"output": None}


@pytest.mark.parametrize("route", ["a", "b"])
async def test_aggregator_groups_with_a_skipped_branch(route: str):
    wf = _branching(route)
    wf.add_node("agg", "variable-aggregator", after=["a", "b"], advanced_settings={
        "group_enabled": True,
        "groups": [
            {"group_name": "text", "output_type": "string",
             "variables": [["a", "value"], ["b", "value"]]},
            {"group_name": "data", "output_type": "object",
             "variables": [["b", "other"], ["a", "other"]]},
        ]})
    wf.add_node("end", "end", after="agg", outputs=[
        {"variable": "text", "value_selector": ["agg", "text", "output"]},
        {"variable": "n", "value_selector": ["agg", "data", "output", "n"]}])
    result = await wf.arun(route=route)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.outputs == {"text": f"from {route}", "n": 1 if route == "a" else 2}
    assert set(_outputs(result, "agg")) == {"text", "data"}


def test_aggregator_declares_its_outputs_for_validation():
    wf = _branching("a")
    wf.add_node("agg", "variable-aggregator", after=["a", "b"], advanced_settings={
        "group_enabled": True, "groups": [{"group_name": "g", "variables": [["a", "value"]]}]})
    wf.add_node("end", "end", after="agg", outputs=[
        {"variable": "ok", "value_selector": ["agg", "g"]},
        {"variable": "bad", "value_selector": ["agg", "output"]}])
    problems = [p for p in cellwire.model.validate(wf) if p.node_id == "end"]
    assert [p.field for p in problems] == ["outputs[1].value_selector"]


async def test_legacy_variable_assigner_type_is_the_aggregator():
    wf = _branching("b")
    wf.add_node("agg", "variable-assigner", after=["a", "b"], output_type="string",
                variables=[["a", "value"], ["b", "value"]])
    result = await wf.arun(route="b")
    assert result.ok, result.error
    assert _outputs(result, "agg") == {"output": "from b"}


# -- assigner -----------------------------------------------------------------------------

def _conversation_wf(variables: dict[str, tuple[str, Any]], x: Any = None,
                     **assigner: Any) -> cellwire.Workflow:
    wf = cellwire.Workflow("conv", mode="advanced-chat")
    wf.conversation_variables = [
        ConversationVariable(name=name, value_type=kind, value=value)
        for name, (kind, value) in variables.items()
    ]
    _start(wf, x=x)
    wf.add_node("assign", "assigner", after="start", **assigner)
    wf.add_node("end", "end", after="assign", outputs=[
        {"variable": name, "value_selector": ["conversation", name]} for name in variables])
    return wf


V2_CASES = [
    # (type, initial, operation, input_type, value, run input x, expected)
    ("string", "old", "over-write", "variable", ["start", "x"], "new", "new"),
    ("number", 1, "set", "constant", 5, None, 5),
    ("string", "abc", "clear", "constant", None, None, ""),
    ("number", 3.5, "clear", "constant", None, None, 0.0),
    ("boolean", True, "clear", "constant", None, None, False),
    ("array[number]", [1, 2], "clear", "constant", None, None, []),
    ("object", {"a": 1}, "clear", "constant", None, None, {}),
    ("array[number]", [1], "append", "constant", 2, None, [1, 2]),
    ("array[string]", ["a"], "append", "variable", ["start", "x"], "b", ["a", "b"]),
    ("array[number]", [1], "extend", "variable", ["start", "x"], [2, 3], [1, 2, 3]),
    ("number", 5, "+=", "constant", 2, None, 7),
    ("number", 5, "-=", "variable", ["start", "x"], 2, 3),
    ("number", 5, "*=", "constant", "3", None, 15),
    ("number", 5, "/=", "constant", 2, None, 2.5),
    ("number", 1.5, "+=", "constant", 1, None, 2.5),
    ("array[number]", [1, 2, 3], "remove-first", "constant", None, None, [2, 3]),
    ("array[number]", [1, 2, 3], "remove-last", "constant", None, None, [1, 2]),
    ("array[number]", [], "remove-first", "constant", None, None, []),
]


@pytest.mark.parametrize(("kind", "initial", "operation", "input_type", "value", "x", "want"),
                         V2_CASES)
async def test_assigner_v2_operation(kind, initial, operation, input_type, value, x, want):
    wf = _conversation_wf({"v": (kind, initial)}, x, version="2", items=[
        {"variable_selector": ["conversation", "v"], "input_type": input_type,
         "operation": operation, "value": value}])
    result = await wf.arun(x=x)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.outputs == {"v": want}
    assert type(result.outputs["v"]) is type(want)
    row = result.trace.set_index("node_id").loc["assign"]
    assert row["outputs"] == {}
    assert row["process_data"]["updated_variables"] == [
        {"selector": ["conversation", "v"], "operation": operation, "old_value": initial,
         "new_value": want}]


@pytest.mark.parametrize(("write_mode", "initial", "x", "want"), [
    ("over-write", "old", "new", "new"),
    ("append", ["a"], "b", ["a", "b"]),
    ("clear", ["a"], None, []),
    ("clear", "text", None, ""),
])
async def test_assigner_v1_write_modes(write_mode, initial, x, want):
    wf = _conversation_wf({"v": ("any", initial)}, x,
                          assigned_variable_selector=["conversation", "v"], write_mode=write_mode,
                          input_variable_selector=["start", "x"] if x is not None else None)
    result = await wf.arun(x=x)
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.outputs == {"v": want}


async def test_assigner_items_apply_in_order_and_persist_across_runs():
    wf = _conversation_wf({"count": ("number", 0), "log": ("array[string]", [])}, "", version="2",
                          items=[
        {"variable_selector": ["conversation", "count"], "input_type": "constant",
         "operation": "+=", "value": 1},
        {"variable_selector": ["conversation", "count"], "input_type": "constant",
         "operation": "*=", "value": 10},
        {"variable_selector": ["conversation", "log"], "input_type": "variable",
         "operation": "append", "value": ["start", "x"]},
    ])
    conversation = {"count": 0, "log": []}
    first = await wf.arun(x="hi", conversation=conversation)
    assert first.outputs == {"count": 10, "log": ["hi"]}
    second = await wf.arun(x="there", conversation=conversation)
    assert second.outputs == {"count": 110, "log": ["hi", "there"]}
    assert conversation == {"count": 110, "log": ["hi", "there"]}
    # A fresh run starts again from the declared values.
    assert (await wf.arun(x="new")).outputs == {"count": 10, "log": ["new"]}


ERROR_CASES = [
    # (type, initial, operation, value, words the error must contain)
    ("string", "abc", "+=", 1, ["items[0]", "+=", "number variable", "a string"]),
    ("string", "abc", "append", "x", ["items[0]", "append", "array variable"]),
    ("array[number]", [1], "extend", 2, ["items[0]", "extend", "array value"]),
    ("number", 1, "/=", 0, ["items[0]", "division by zero"]),
    ("number", 1, "-=", "many", ["items[0]", "-=", "number value"]),
    ("number", 1, "over-write", "text", ["items[0]", "over-write", "a string", "a number"]),
    ("number", 1, "pow", 2, ["items[0].operation", "'pow'", "remove-last"]),
]


@pytest.mark.parametrize(("kind", "initial", "operation", "value", "words"), ERROR_CASES)
async def test_assigner_type_errors_name_the_item_and_operation(kind, initial, operation, value,
                                                                  words):
    wf = _conversation_wf({"v": (kind, initial)}, version="2", items=[
        {"variable_selector": ["conversation", "v"], "input_type": "constant",
         "operation": operation, "value": value}])
    conversation = {"v": initial}
    result = await wf.arun(x=None, conversation=conversation)
    assert result.status == RunStatus.FAILED
    assert result.error_node == "assign"
    for word in words:
        assert word in result.error
    assert conversation == {"v": initial}


async def test_assigner_failing_item_leaves_every_variable_unchanged():
    wf = _conversation_wf({"a": ("number", 1), "b": ("string", "s")}, version="2", items=[
        {"variable_selector": ["conversation", "a"], "input_type": "constant",
         "operation": "+=", "value": 1},
        {"variable_selector": ["conversation", "b"], "input_type": "constant",
         "operation": "+=", "value": 1},
    ])
    conversation = {"a": 1, "b": "s"}
    result = await wf.arun(x=None, conversation=conversation)
    assert result.status == RunStatus.FAILED and "items[1]" in result.error
    assert conversation == {"a": 1, "b": "s"}


async def test_assigner_refuses_undeclared_and_read_only_variables():
    wf = _conversation_wf({"v": ("string", "")}, version="2", items=[
        {"variable_selector": ["conversation", "v"], "input_type": "constant",
         "operation": "set", "value": "ok"}])
    # The validator catches the undeclared name before the run...
    wf.update_node("assign", items=[{"variable_selector": ["conversation", "ghost"],
                                     "input_type": "constant", "operation": "set",
                                     "value": "x"}])
    problems = [p for p in cellwire.model.validate(wf) if p.node_id == "assign"]
    assert problems and "ghost" in problems[0].message
    # ...and the node itself refuses sys.* and env.* targets.
    wf.update_node("assign", items=[{"variable_selector": ["sys", "query"],
                                     "input_type": "constant", "operation": "set",
                                     "value": "x"}])
    result = await wf.arun(x=None)
    assert result.status == RunStatus.FAILED
    assert "items[0].variable_selector" in result.error and "read-only" in result.error


async def test_assigner_updates_a_loop_variable():
    wf = cellwire.Workflow("loop")
    wf.add_node("lp", "loop", loop_count=10, logical_operator="and",
                loop_variables=[{"label": "n", "var_type": "number", "value_type": "constant",
                                 "value": 0},
                                {"label": "seen", "var_type": "array[number]",
                                 "value_type": "constant", "value": []}],
                break_conditions=[{"variable_selector": ["lp", "n"], "comparison_operator": "≥",
                                   "value": "3"}])
    wf.add_node("ls", "loop-start", parent="lp")
    wf.add_node("inc", "assigner", parent="lp", after="ls", version="2", items=[
        {"variable_selector": ["lp", "n"], "input_type": "constant", "operation": "+=",
         "value": 1},
        {"variable_selector": ["lp", "seen"], "input_type": "variable", "operation": "append",
         "value": ["lp", "index"]},
    ])
    wf.add_node("end", "end", after="lp", outputs=[
        {"variable": "n", "value_selector": ["lp", "n"]},
        {"variable": "seen", "value_selector": ["lp", "seen"]}])
    result = await wf.arun()
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert result.outputs == {"n": 3, "seen": [0, 1, 2]}


# -- list-operator ------------------------------------------------------------------------

PEOPLE = [
    {"name": "Ada", "age": 36, "city": "London"},
    {"name": "Alan", "age": 41, "city": "Wilmslow"},
    {"name": "Grace", "age": 85, "city": "Arlington"},
    {"name": "Linus", "age": 28, "city": "Helsinki"},
    {"name": "Anita", "city": "Paris"},
]


async def _list(items: Any, n: Any = 1, **config: Any) -> cellwire.RunResult:
    wf = cellwire.Workflow("list")
    _start(wf, items=items, n=n)
    wf.add_node("op", "list-operator", after="start", variable=["start", "items"], **config)
    return await wf.arun(items=items, n=n)


async def test_list_operator_filter_sort_limit():
    result = await _list(
        PEOPLE,
        filter_by={"enabled": True, "conditions": [
            {"key": "name", "comparison_operator": "start with", "value": "A"},
            {"key": "age", "comparison_operator": ">", "value": "30"}]},
        order_by={"enabled": True, "key": "age", "value": "desc"},
        limit={"enabled": True, "size": 1},
    )
    assert result.ok, result.error
    alan = PEOPLE[1]
    assert _outputs(result, "op") == {"result": [alan], "first_record": alan,
                                      "last_record": alan}


async def test_list_operator_orders_with_missing_keys_last():
    result = await _list(PEOPLE, order_by={"enabled": True, "key": "age", "value": "asc"})
    names = [p["name"] for p in _outputs(result, "op")["result"]]
    assert names == ["Linus", "Ada", "Alan", "Grace", "Anita"]
    result = await _list(PEOPLE, order_by={"enabled": True, "key": "name", "value": "desc"})
    assert [p["name"] for p in _outputs(result, "op")["result"]] == [
        "Linus", "Grace", "Anita", "Alan", "Ada"]


@pytest.mark.parametrize(("items", "conditions", "want"), [
    ([3, 10, 7, 1], [{"comparison_operator": "≥", "value": "7"}], [10, 7]),
    (["apple", "banana", "cherry"], [{"comparison_operator": "contains", "value": "an"}],
     ["banana"]),
    (["apple", "banana", "cherry"], [{"comparison_operator": "not in",
                                      "value": ["apple", "cherry"]}], ["banana"]),
    ([True, False, True], [{"comparison_operator": "is", "value": "false"}], [False]),
    (["a", "b"], [{"comparison_operator": "is", "value": "{{#start.n#}}"}], ["b"]),
])
async def test_list_operator_filters_primitive_arrays(items, conditions, want):
    result = await _list(items, n="b", filter_by={"enabled": True, "conditions": conditions})
    assert result.ok, result.error
    assert _outputs(result, "op")["result"] == want


@pytest.mark.parametrize(("serial", "n", "want"), [
    ("1", 1, "Ada"), ("3", 1, "Grace"), ("{{#start.n#}}", 4, "Linus"), (2, 1, "Alan")])
async def test_list_operator_extracts_by_serial(serial, n, want):
    result = await _list(PEOPLE, n=n, extract_by={"enabled": True, "serial": serial})
    assert result.ok, result.error
    out = _outputs(result, "op")
    assert [p["name"] for p in out["result"]] == [want]
    assert out["first_record"] == out["last_record"] == out["result"][0]


async def test_list_operator_steps_run_in_difys_order():
    # filter -> extract -> order -> limit: extracting the 2nd of the filtered list.
    result = await _list([5, 1, 4, 2, 3],
                         filter_by={"enabled": True, "conditions": [
                             {"comparison_operator": ">", "value": "1"}]},
                         extract_by={"enabled": True, "serial": "2"},
                         order_by={"enabled": True, "value": "asc"},
                         limit={"enabled": True, "size": 5})
    assert _outputs(result, "op")["result"] == [4]


async def test_list_operator_empty_result_and_none_input():
    result = await _list([1, 2], filter_by={"enabled": True, "conditions": [
        {"comparison_operator": ">", "value": "5"}]})
    assert _outputs(result, "op") == {"result": [], "first_record": None, "last_record": None}
    result = await _list(None)
    assert _outputs(result, "op") == {"result": [], "first_record": None, "last_record": None}


@pytest.mark.parametrize(("items", "config", "words"), [
    ({"not": "a list"}, {}, ["field 'variable'", "not an array"]),
    ("text", {}, ["field 'variable'", "not an array"]),
    ([1, 2], {"extract_by": {"enabled": True, "serial": "3"}},
     ["extract_by.serial", "outside", "1 to 2"]),
    ([1, 2], {"extract_by": {"enabled": True, "serial": "0"}}, ["extract_by.serial"]),
    ([1, 2], {"extract_by": {"enabled": True, "serial": "first"}},
     ["extract_by.serial", "whole number"]),
    ([1, "a"], {"order_by": {"enabled": True, "value": "asc"}}, ["mixed types"]),
    ([1, 2], {"filter_by": {"enabled": True, "conditions": [
        {"comparison_operator": "like", "value": "1"}]}},
     ["filter_by.conditions[0].comparison_operator", "'like'"]),
    ([1, 2], {"limit": {"enabled": True, "size": -1}}, ["limit.size"]),
])
async def test_list_operator_errors_name_the_field(items, config, words):
    result = await _list(items, **config)
    assert result.status == RunStatus.FAILED
    for word in words:
        assert word in result.error, result.error
