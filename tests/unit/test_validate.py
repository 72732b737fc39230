"""validate(): every problem names the node, the field and the fix."""

from __future__ import annotations

import pytest

import cellwire
from cellwire.model import ConversationVariable, WorkflowError, validate
from cellwire.model.validate import duplicate_ids


def _wf():
    wf = cellwire.Workflow("v")
    wf.add_node("start", "start", variables=[{"variable": "q", "required": True}])
    return wf


def _one(problems, level="error"):
    found = [p for p in problems if p.level == level]
    assert len(found) == 1, found
    return found[0]


def _said(problem):
    """What is wrong, without what a run does about it."""
    return problem.message.split("; at run time")[0]


def test_valid_workflow_has_no_problems():
    wf = _wf()
    wf.add_node("end", "end", outputs=[{"variable": "q", "value_selector": ["start", "q"]}],
                after="start")
    assert validate(wf) == []


def test_unknown_node_type():
    wf = _wf()
    wf.add_node("x", "frobnicate", after="start")
    p = _one(validate(wf))
    assert (p.node_id, p.field) == ("x", "type")
    assert "frobnicate" in p.message and "node_type" in p.hint


def test_duplicate_ids_and_id_mismatch():
    (p,) = duplicate_ids(["a", "b", "a"])
    assert (p.node_id, p.field) == ("a", "id")
    wf = _wf()
    wf.nodes["other"] = wf.nodes["start"].model_copy()
    assert any(p.node_id == "other" and p.field == "id" for p in validate(wf))


def test_dangling_edge_is_a_warning_and_the_run_ignores_it():
    # Dify imports a file with an edge to a deleted node; a run ignores the edge.
    wf = _wf()
    wf.add_node("end", "end", outputs=[{"variable": "q", "value_selector": ["start", "q"]}],
                after="start")
    wf.connect("start", "ghost")
    p = _one(validate(wf), "warning")
    assert p.node_id == "ghost" and "does not exist" in p.message and "ignores" in p.message
    assert wf.run(q="hi").outputs == {"q": "hi"}


def test_missing_references_are_warnings_and_read_as_none_at_run_time():
    wf = _wf()
    wf.add_node("end", "end", after="start",
                outputs=[{"variable": "a", "value_selector": ["nowhere", "x"]},
                         {"variable": "b", "value_selector": ["env", "UNDECLARED"]},
                         {"variable": "c", "value_selector": ["sys", "fork_only"]},
                         {"variable": "d", "value_selector": ["start", "q"]}])
    problems = validate(wf)
    assert {p.field for p in problems} == {
        "outputs[0].value_selector", "outputs[1].value_selector", "outputs[2].value_selector"}
    assert all(p.level == "warning" and "reads as nothing" in p.message for p in problems)
    result = wf.run(q="hi")
    assert result.ok and result.outputs == {"a": None, "b": None, "c": None, "d": "hi"}


def test_a_disabled_vision_selector_is_not_checked():
    wf = _wf()
    vision = {"enabled": False, "configs": {"variable_selector": ["gone", "files"]}}
    wf.add_node("llm", "llm", after="start", model={"provider": "scripted", "name": "echo"},
                prompt_template=[{"role": "user", "text": "{{#start.q#}}"}], vision=vision)
    assert validate(wf) == []
    wf.update_node("llm", vision={**vision, "enabled": True})
    assert [(p.field, p.level) for p in validate(wf)] == [
        ("vision.configs.variable_selector", "warning")]


def test_reference_to_missing_node_and_missing_output():
    wf = _wf()
    wf.add_node("end", "end", after="start",
                outputs=[{"variable": "a", "value_selector": ["nowhere", "x"]},
                         {"variable": "b", "value_selector": ["start", "nope"]}])
    problems = validate(wf)
    fields = {(p.node_id, p.field) for p in problems}
    assert ("end", "outputs[0].value_selector") in fields
    assert ("end", "outputs[1].value_selector") in fields
    missing_output = next(p for p in problems if p.field == "outputs[1].value_selector")
    assert "no output 'nope'" in missing_output.message and "q" in missing_output.hint


def test_plain_fields_check_dify_references_only():
    @cellwire.node_type("v-text")
    async def text(ctx):
        return {}

    wf = _wf()
    wf.add_node("t", "v-text", after="start",
                text="{{#ghost.x#}} and {{ start.missing }} and {{ name }} and {{ x: 1 }}")
    problems = validate(wf)
    # {{ ... }} in a plain field is literal text (Dify), so only the Dify reference counts.
    assert [(p.field, _said(p)) for p in problems] == [
        ("text", "refers to node 'ghost', which does not exist")]


def test_jinja_fields_check_their_node_references():
    wf = _wf()
    wf.add_node("t", "template-transform", after="start",
                template="{{ start.missing }} {{ start.q }} {{ doc.title }} {{#ghost.x#}}",
                variables=[{"variable": "doc", "value_selector": ["start", "q"]}])
    wf.add_node("llm", "llm", after="start", model={"provider": "scripted", "name": "echo"},
                prompt_template=[
                    {"role": "system", "text": "{{ start.nope }}"},
                    {"role": "user", "edition_type": "jinja2", "jinja2_text": "{{ start.gone }}"}])
    problems = {(p.node_id, p.field, _said(p)) for p in validate(wf)}
    assert problems == {
        ("t", "template", "node 'start' has no output 'missing'"),
        ("t", "template", "refers to node 'ghost', which does not exist"),
        ("llm", "prompt_template[1].jinja2_text", "node 'start' has no output 'gone'"),
    }


def test_reserved_prefixes_are_checked():
    wf = _wf()
    wf.add_node("end", "end", after="start",
                outputs=[{"variable": "a", "value_selector": ["env", "API_URL"]},
                         {"variable": "b", "value_selector": ["sys", "bogus"]},
                         {"variable": "c", "value_selector": ["conversation", "memo"]}])
    messages = " | ".join(p.message for p in validate(wf))
    assert "environment variable 'API_URL'" in messages
    assert "sys.bogus" in messages
    assert "conversation variable 'memo'" in messages
    wf.environment.append(cellwire.model.EnvironmentVariable(name="API_URL", value="x"))
    assert "API_URL" not in " ".join(p.message for p in validate(wf))


def test_cycle_outside_a_loop():
    wf = _wf()
    wf.add_node("a", "end", after="start")
    wf.add_node("b", "end", after="a")
    wf.connect("b", "a")
    p = next(p for p in validate(wf) if "cycle" in p.message)
    assert "a -> b -> a" in p.message and "loop" in p.hint


def test_unreachable_node_is_a_warning():
    wf = _wf()
    wf.add_node("island", "end")
    p = _one(validate(wf), level="warning")
    assert p.node_id == "island" and "unreachable" in p.message


def test_branch_handle_that_matches_no_case():
    @cellwire.node_type("v-branch", handles=["yes", "no"])
    async def branch(ctx):
        return {}

    wf = _wf()
    wf.add_node("b", "v-branch", after="start")
    wf.add_node("e", "end", after=[("b", "maybe")])
    (p,) = [p for p in validate(wf) if p.node_id == "b"]
    assert p.node_id == "b" and p.field.endswith("source_handle") and p.level == "warning"
    assert "'maybe'" in p.message and "never takes it" in p.message and "yes" in p.hint


async def test_a_stale_handle_is_skipped_by_a_branch_and_taken_by_a_plain_node():
    # As in Dify's engine: a branch follows only its chosen handle; other nodes take all.
    wf = _wf()
    wf.add_node("check", "if-else", after="start", cases=[{
        "case_id": "true", "logical_operator": "and", "conditions": [
            {"variable_selector": ["start", "q"], "comparison_operator": "is", "value": "go"}]}])
    wf.add_node("stale", "end", after=[("check", "deleted-case")],
                outputs=[{"variable": "stale", "value_selector": ["start", "q"]}])
    wf.add_node("t", "template-transform", after="start", template="x")
    wf.add_node("plain", "end", after=[("t", "odd")],
                outputs=[{"variable": "plain", "value_selector": ["t", "output"]}])
    assert {(p.node_id, p.level) for p in validate(wf)} == {("check", "warning"),
                                                             ("t", "warning")}
    result = await wf.arun(q="go")
    assert result.node_status("stale") == "skipped"
    assert result.node_status("plain") == "succeeded"


def test_missing_required_start_input():
    wf = _wf()
    p = _one(validate(wf, inputs={}))
    assert (p.node_id, p.field) == ("start", "variables.q")
    assert validate(wf, inputs={"q": "x"}) == []


def test_bad_config_names_the_field():
    wf = _wf()
    wf.add_node("end", "end", after="start", outputs=[{"value_selector": ["start", "q"]}])
    p = _one(validate(wf))
    assert p.node_id == "end" and p.field == "outputs.0.variable"


def test_problem_text_names_node_field_and_fix():
    wf = _wf()
    wf.add_node("x", "frobnicate", after="start")
    text = str(validate(wf)[0])
    assert text.startswith("node 'x' field 'type': unknown node type") and "(fix: " in text


def test_node_types_declare_references_outside_selector_fields():
    wf = _wf()
    wf.add_node("agg", "variable-aggregator", after="start",
                variables=[["start", "q"], ["start", "typo"]])
    wf.add_node("ops", "list-operator", after="start", variable=["ghost", "list"])
    problems = {(p.node_id, p.field): _said(p) for p in validate(wf)}
    assert problems == {
        ("agg", "variables[1]"): "node 'start' has no output 'typo'",
        ("ops", "variable"): "refers to node 'ghost', which does not exist",
    }


def test_a_reference_of_a_node_types_own_field_with_non_names_is_a_problem():
    # The assigner's `value` holds any list when input_type is "variable"; a list of lists
    # (as a mutated Dify file has) used to crash validation with "unhashable type: 'list'".
    wf = cellwire.Workflow("v", mode="advanced-chat")
    wf.conversation_variables = [ConversationVariable(name="n", value_type="string")]
    wf.add_node("start", "start", variables=[{"variable": "q"}])
    wf.add_node("assign", "assigner", after="start", version="2", items=[
        {"variable_selector": ["conversation", "n"], "operation": "over-write",
         "input_type": "variable", "value": [["a", "b"], 1]}])
    p = _one(validate(wf))
    assert (p.node_id, p.field) == ("assign", "items[0].value")
    assert "[['a', 'b'], 1] is not a variable reference" in p.message
    assert "[node_id, output]" in p.hint
    with pytest.raises(WorkflowError, match=r"node 'assign' field 'items\[0\]\.value'"):
        wf.run(q="x")
