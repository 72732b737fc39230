"""Dify's comparison operators, exercised through real if-else runs, and if-else routing."""

from __future__ import annotations

from typing import Any

import pytest

import cellwire
from cellwire.engine import NodeError, RunStatus
from cellwire.model import validate
from cellwire.nodes.conditions import OPERATORS, Condition, compare, evaluate


def _start(wf: cellwire.Workflow, **values: Any) -> None:
    """A start node declaring each value; non-strings pass through unchanged (json_object)."""
    wf.add_node("start", "start", variables=[
        {"variable": k, "type": "text-input" if isinstance(v, str) else "json_object"}
        for k, v in values.items()
    ])


async def _check(operator: str, actual: Any, expected: Any, **extra: Any) -> cellwire.RunResult:
    wf = cellwire.Workflow("op")
    _start(wf, x=actual, **extra)
    wf.add_node("check", "if-else", after="start", cases=[{
        "case_id": "yes", "logical_operator": "and",
        "conditions": [{"variable_selector": ["start", "x"], "comparison_operator": operator,
                        "value": expected}],
    }])
    return await wf.arun(x=actual, **extra)


OPERATOR_CASES = [
    ("contains", "hello world", "world", True),
    ("contains", "hello", "xyz", False),
    ("contains", ["a", "b"], "b", True),
    ("contains", [1, 2], "2", True),
    ("contains", [1, 2], "3", False),
    ("contains", None, "a", False),
    ("not contains", "hello", "xyz", True),
    ("not contains", "hello", "ell", False),
    ("not contains", ["a"], "a", False),
    ("not contains", None, "a", True),
    ("start with", "hello", "he", True),
    ("start with", "hello", "lo", False),
    ("end with", "hello", "lo", True),
    ("end with", "hello", "he", False),
    ("is", "abc", "abc", True),
    ("is", "abc", "abd", False),
    ("is", True, "true", True),
    ("is", False, "true", False),
    ("is", None, "abc", False),
    ("is not", "abc", "abd", True),
    ("is not", "abc", "abc", False),
    ("is not", None, "abc", False),
    ("empty", [], None, True),
    ("empty", None, None, True),
    ("empty", "x", None, False),
    ("not empty", [1], None, True),
    ("not empty", [], None, False),
    ("in", "b", ["a", "b"], True),
    ("in", "c", ["a", "b"], False),
    ("in", None, ["a"], False),
    ("not in", "c", ["a", "b"], True),
    ("not in", "a", ["a", "b"], False),
    ("all of", ["a", "b", "c"], ["a", "c"], True),
    ("all of", ["a"], ["a", "c"], False),
    ("=", 5, "5", True),
    ("=", 5, "6", False),
    ("=", 3.5, "3.5", True),
    ("=", True, "true", True),
    ("=", None, "1", False),
    ("≠", 5, "6", True),
    ("≠", 5, "5", False),
    ("!=", 5, "6", True),
    ("!=", 5, 5, False),
    (">", 10, "9", True),  # numerically, though "10" < "9" as text
    (">", 9, "10", False),
    (">", None, "1", False),
    ("<", 9, "10", True),
    ("<", 10, "9", False),
    ("≥", 3, "3", True),
    ("≥", 2, "3", False),
    (">=", 4, "3", True),
    (">=", 2.5, "3", False),
    ("≤", 3, "3", True),
    ("≤", 4, "3", False),
    ("<=", 2, 3, True),
    ("<=", 4, 3, False),
    ("null", None, None, True),
    ("null", 0, None, False),
    ("not null", 0, None, True),
    ("not null", None, None, False),
    ("exists", "x", None, True),
    ("exists", None, None, False),
    ("not exists", None, None, True),
    ("not exists", [], None, False),
]


@pytest.mark.parametrize(("operator", "actual", "expected", "want"), OPERATOR_CASES)
async def test_operator_through_if_else(operator: str, actual: Any, expected: Any, want: bool):
    result = await _check(operator, actual, expected)
    assert result.status == RunStatus.SUCCEEDED, result.error
    outputs = result.trace.set_index("node_id").loc["check", "outputs"]
    assert outputs["result"] is want
    assert outputs["selected_case_id"] == ("yes" if want else None)


def test_every_operator_has_a_true_and_a_false_case():
    canonical = {op for op, *_ in OPERATOR_CASES}
    assert canonical == set(OPERATORS)
    for op in OPERATORS:
        wants = {want for o, _a, _e, want in OPERATOR_CASES if o == op}
        assert wants == {True, False}, op


async def test_value_may_reference_another_variable():
    wf = cellwire.Workflow("ref")
    _start(wf, x=7, limit=5)
    wf.add_node("check", "if-else", after="start", cases=[{
        "case_id": "over", "conditions": [{
            "variable_selector": ["start", "x"], "comparison_operator": ">",
            "value": "{{#start.limit#}}"}]}])
    wf.add_node("big", "end", after=[("check", "over")])
    wf.add_node("small", "end", after=[("check", "false")])
    assert (await wf.arun(x=7, limit=5)).node_status("big") == "succeeded"
    result = await wf.arun(x=7, limit=9)
    assert result.node_status("big") == "skipped"
    assert result.node_status("small") == "succeeded"


async def test_unknown_operator_fails_naming_the_field_and_the_valid_operators():
    result = await _check("looks like", "a", "b")
    assert result.status == RunStatus.FAILED
    assert result.error_node == "check"
    assert "cases[0].conditions[0].comparison_operator" in result.error
    assert "'looks like'" in result.error and "not contains" in result.error


async def test_numeric_operator_on_text_fails_with_a_hint():
    result = await _check(">", "abc", "3")
    assert result.status == RunStatus.FAILED
    assert "comparison_operator" in result.error and "not a number" in result.error


async def test_sub_variable_condition_on_an_array_of_files():
    files = [{"name": "a.pdf", "extension": ".pdf", "size": 10},
             {"name": "b.png", "extension": ".png", "size": 99}]

    async def route(sub: dict[str, Any]) -> bool:
        wf = cellwire.Workflow("files")
        _start(wf, files=files)
        wf.add_node("check", "if-else", after="start", cases=[{
            "case_id": "hit", "conditions": [{
                "variable_selector": ["start", "files"], "comparison_operator": "contains",
                "sub_variable_condition": sub}]}])
        result = await wf.arun(files=files)
        assert result.ok, result.error
        return result.trace.set_index("node_id").loc["check", "outputs"]["result"]

    pdf = {"key": "extension", "comparison_operator": "is", "value": "pdf"}
    big = {"key": "size", "comparison_operator": ">", "value": "50"}
    doc = {"key": "extension", "comparison_operator": "is", "value": "doc"}
    assert await route({"logical_operator": "and", "conditions": [pdf, big]}) is True
    assert await route({"logical_operator": "and", "conditions": [pdf, doc]}) is False
    assert await route({"logical_operator": "or", "conditions": [doc, big]}) is True
    # A 'not' operator must hold for every item.
    not_doc = {"key": "extension", "comparison_operator": "is not", "value": ".doc"}
    not_pdf = {"key": "extension", "comparison_operator": "is not", "value": ".pdf"}
    assert await route({"logical_operator": "and", "conditions": [not_doc]}) is True
    assert await route({"logical_operator": "and", "conditions": [not_pdf]}) is False


def test_evaluate_combines_with_and_or_and_reads_through_get():
    values = {("n", "a"): 1, ("n", "b"): "x"}

    def get(selector: Any) -> Any:
        return values.get(tuple(selector))

    yes = Condition(variable_selector=["n", "a"], comparison_operator="=", value="1")
    no = Condition(variable_selector=["n", "b"], comparison_operator="is", value="y")
    missing = Condition(variable_selector=["n", "zzz"], comparison_operator="not exists")
    assert evaluate([yes, missing], "and", get) is True
    assert evaluate([yes, no], "and", get) is False
    assert evaluate([no, yes], "or", get) is True
    assert evaluate([no], "or", get) is False
    assert compare("contains", {"k": 1}, "k") is True
    typo = Condition(variable_selector=["n", "a"], comparison_operator="=>", value="1")
    with pytest.raises(NodeError, match=r"conditions\[1\]\.comparison_operator"):
        evaluate([no, typo], "and", get)  # fails even though the first condition decides


# -- if-else routing ------------------------------------------------------------------------

def _router() -> cellwire.Workflow:
    wf = cellwire.Workflow("router")
    _start(wf, x=0, tag="")
    wf.add_node("check", "if-else", after="start", cases=[
        {"case_id": "huge", "logical_operator": "and", "conditions": [
            {"variable_selector": ["start", "x"], "comparison_operator": ">", "value": "10"}]},
        {"case_id": "mid", "logical_operator": "or", "conditions": [
            {"variable_selector": ["start", "x"], "comparison_operator": ">", "value": "5"},
            {"variable_selector": ["start", "tag"], "comparison_operator": "is",
             "value": "vip"}]},
    ])
    wf.add_node("on_huge", "end", after=[("check", "huge")])
    wf.add_node("after_huge", "end", after="on_huge")
    wf.add_node("on_mid", "end", after=[("check", "mid")])
    wf.add_node("on_else", "end", after=[("check", "false")])
    return wf


@pytest.mark.parametrize(("x", "tag", "chosen"), [
    (20, "", "huge"),  # both cases hold: the first one wins
    (7, "", "mid"),
    (1, "vip", "mid"),  # the second case holds through its 'or'
    (1, "", "false"),
])
async def test_multi_case_routing_skips_the_unchosen_branches(x: int, tag: str, chosen: str):
    result = await _router().arun(x=x, tag=tag)
    assert result.status == RunStatus.SUCCEEDED, result.error
    branches = {"huge": ["on_huge", "after_huge"], "mid": ["on_mid"], "false": ["on_else"]}
    for case, nodes in branches.items():
        for node in nodes:
            assert result.node_status(node) == ("succeeded" if case == chosen else "skipped")
    row = result.trace.set_index("node_id").loc["check"]
    assert row["handle"] == chosen
    assert row["outputs"] == {"result": chosen != "false",
                              "selected_case_id": None if chosen == "false" else chosen}


@pytest.mark.parametrize(("x", "chosen"), [(3, "true"), (50, "true"), (7, "false")])
async def test_legacy_form_is_one_case_called_true(x: int, chosen: str):
    wf = cellwire.Workflow("legacy")
    _start(wf, x=0)
    wf.add_node("check", "if-else", after="start", logical_operator="or", conditions=[
        {"variable_selector": ["start", "x"], "comparison_operator": "<", "value": "5"},
        {"variable_selector": ["start", "x"], "comparison_operator": "≥", "value": "20"},
    ])
    wf.add_node("yes", "end", after=[("check", "true")])
    wf.add_node("no", "end", after=[("check", "false")])
    result = await wf.arun(x=x)
    assert result.node_status("yes") == ("succeeded" if chosen == "true" else "skipped")
    assert result.node_status("no") == ("succeeded" if chosen == "false" else "skipped")
    outputs = result.trace.set_index("node_id").loc["check", "outputs"]
    assert outputs == {"result": chosen == "true", "selected_case_id": chosen}


def test_validate_flags_an_edge_whose_handle_matches_no_case():
    wf = _router()
    wf.add_node("lost", "end", after=[("check", "nope")])
    problems = [p for p in validate(wf) if p.node_id == "check"]
    assert len(problems) == 1
    assert problems[0].field.endswith("source_handle")
    assert "'nope'" in problems[0].message
    assert all(h in problems[0].hint for h in ("huge", "mid", "false"))
    wf.disconnect("check", "lost")
    wf.connect("check", "lost", "mid")
    assert not [p for p in validate(wf) if p.level == "error"]


def test_legacy_form_handles_are_true_and_false():
    wf = cellwire.Workflow("legacy-handles")
    _start(wf, x=0)
    wf.add_node("check", "if-else", after="start", conditions=[
        {"variable_selector": ["start", "x"], "comparison_operator": "empty"}])
    wf.add_node("a", "end", after=[("check", "true")])
    wf.add_node("b", "end", after=[("check", "false")])
    assert not [p for p in validate(wf) if p.level == "error"]
    wf.add_node("c", "end", after=[("check", "yes")])
    assert [p.field for p in validate(wf) if p.node_id == "check"] == [
        "edges[check->c].source_handle"]


def test_a_case_named_false_is_rejected_at_validation():
    wf = cellwire.Workflow("clash")
    _start(wf, x=0)
    wf.add_node("check", "if-else", after="start", cases=[
        {"case_id": "false", "conditions": [
            {"variable_selector": ["start", "x"], "comparison_operator": "empty"}]}])
    problems = [p for p in validate(wf) if p.node_id == "check"]
    assert problems and "else branch" in problems[0].message
