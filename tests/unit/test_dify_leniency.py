"""What Dify's own loader and engine accept, cellwire accepts too (issue 15), each case as
Dify handles it: graphon's pydantic models (RetryConfig, VisionConfig), Dify's
``BaseAppGenerator._validate_inputs`` for start inputs, and its import keeping defects that
the engine then fails or skips at run time (warnings here, not errors)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cellwire.cli import cli
from cellwire.engine import RunStatus
from cellwire.formats.dify import dump_dify, import_dify, load_dify
from cellwire.model import WorkflowError


def _doc(nodes: list[dict[str, Any]], edges: list[tuple[str, str, str]],
         env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"version": "0.6.0", "kind": "app", "app": {"name": "t", "mode": "workflow"},
            "workflow": {"environment_variables": env or [], "graph": {
                "nodes": [{"id": n.pop("id"), "type": "custom", "data": n} for n in nodes],
                "edges": [{"source": s, "sourceHandle": h, "target": t} for s, h, t in edges]}}}


def _start(*variables: dict[str, Any]) -> dict[str, Any]:
    return {"id": "s", "type": "start", "title": "Start", "variables": list(variables)}


def _end(**selectors: list[str]) -> dict[str, Any]:
    return {"id": "e", "type": "end", "title": "End",
            "outputs": [{"variable": k, "value_selector": v} for k, v in selectors.items()]}


def _code(**data: Any) -> dict[str, Any]:
    return {"id": "c", "type": "code", "title": "Code", "code_language": "python3",
            "code": "def main(x):\n    return {'y': x}\n",
            "variables": [{"variable": "x", "value_selector": ["s", "q"]}],
            "outputs": {"y": {"type": "string"}}, **data}


@pytest.mark.parametrize(("given", "seconds"), [("1500", 1.5), (" 500 ", 0.5), (2000.0, 2.0)])
def test_retry_interval_given_as_text_is_coerced_as_dify_does(given: Any, seconds: float):
    code = _code(retry_config={"retry_enabled": True, "max_retries": "2",
                               "retry_interval": given})
    doc = _doc([_start({"variable": "q"}), code, _end(y=["c", "y"])],
               [("s", "source", "c"), ("c", "source", "e")])
    wf = load_dify(doc)
    assert (wf.nodes["c"].retry.max_retries, wf.nodes["c"].retry.interval) == (2, seconds)
    # The export writes back what the file said.
    assert yaml.safe_load(dump_dify(wf))["workflow"]["graph"]["nodes"][1]["data"][
        "retry_config"]["retry_interval"] == given
    assert load_dify(dump_dify(wf)) == wf


def test_retry_interval_that_is_no_number_is_still_an_error():
    code = _code(retry_config={"retry_enabled": True, "max_retries": 1, "retry_interval": "1s"})
    with pytest.raises(WorkflowError) as caught:
        import_dify(_doc([_start({"variable": "q"}), code], [("s", "source", "c")]))
    (problem,) = caught.value.problems
    assert (problem.node_id, problem.field) == ("c", "data.retry_config.retry_interval")


def test_vision_selector_is_ignored_while_vision_is_off():
    llm = {"id": "l", "type": "llm", "title": "LLM",
           "model": {"provider": "scripted", "name": "echo", "mode": "chat"},
           "prompt_template": [{"role": "user", "text": "{{#s.q#}}"}],
           "vision": {"enabled": False, "configs": {"variable_selector": ["17000", "files"]}}}
    doc = _doc([_start({"variable": "q"}), llm, _end(text=["l", "text"])],
               [("s", "source", "l"), ("l", "source", "e")])
    imported = import_dify(doc)
    assert not [p for p in imported.problems if p.node_id == "l"]
    assert imported.workflow.run(q="hi").status is RunStatus.SUCCEEDED


def test_max_length_limits_text_not_the_options_of_a_select():
    start = _start({"variable": "tone", "type": "select", "max_length": 5, "required": True,
                    "options": ["formal and precise", "casual"]},
                   {"variable": "name", "type": "text-input", "max_length": 3})
    wf = load_dify(_doc([start, _end(tone=["s", "tone"])], [("s", "source", "e")]))
    assert wf.run(tone="formal and precise", name="Ada").outputs == {
        "tone": "formal and precise"}
    too_long = wf.run(tone="casual", name="Grace")
    assert too_long.status is RunStatus.FAILED and "max_length=3" in too_long.error


def test_empty_text_is_a_value_for_a_required_select_that_offers_it():
    start = _start({"variable": "lang", "type": "select", "required": True,
                    "options": ["", "en", "fr"]},
                   {"variable": "mode", "type": "select", "required": True,
                    "options": ["a", "b"]})
    wf = load_dify(_doc([start, _end(lang=["s", "lang"])], [("s", "source", "e")]))
    assert wf.run(lang="", mode="a").outputs == {"lang": ""}
    refused = wf.run(lang="en", mode="")
    assert refused.status is RunStatus.FAILED and "'mode' is missing" in refused.error


DEFECTS = _doc(
    [_start({"variable": "q"}),
     {"id": "if", "type": "if-else", "title": "If", "cases": [
         {"case_id": "true", "logical_operator": "and", "conditions": [
             {"variable_selector": ["s", "q"], "comparison_operator": "is", "value": "go"}]}]},
     {"id": "t", "type": "template-transform", "title": "T", "template": "{{ a }}|{{ b }}",
      "variables": [{"variable": "a", "value_selector": ["env", "UNDECLARED"]},
                    {"variable": "b", "value_selector": ["sys", "user_name"]}]},
     _end(out=["t", "output"], lost=["deleted_node", "text"])],
    [("s", "source", "if"), ("if", "true", "t"), ("t", "source", "e"),
     ("t", "source", "deleted_node")])

#: (node, field prefix) of each defect Dify imports: warned, never refused.
WARNED = {("deleted_node", "edges["), ("if", "false"), ("t", "variables[0].value_selector"),
          ("t", "variables[1].value_selector"), ("e", "outputs[1].value_selector")}


def test_defects_dify_imports_are_warnings_naming_node_field_and_fix():
    imported = import_dify(DEFECTS)
    found = {(p.node_id, p.field) for p in imported.problems}
    for node, field in WARNED:
        assert any(n == node and (f or "").startswith(field) for n, f in found), (node, field)
    assert all(p.level == "warning" and p.hint for p in imported.problems)


def test_defects_run_as_in_dify_missing_values_read_as_none_the_dead_branch_ends_the_run():
    wf = load_dify(DEFECTS)
    taken = wf.run(q="go")
    assert taken.status is RunStatus.SUCCEEDED
    assert taken.outputs == {"out": "None|None", "lost": None}
    skipped = wf.run(q="stop")  # the else branch leads nowhere: the run ends there
    assert skipped.status is RunStatus.SUCCEEDED and skipped.outputs == {}


def test_cli_import_and_validate_accept_them_and_strict_refuses(tmp_path: Any):
    path = tmp_path / "defects.yml"
    path.write_text(yaml.safe_dump(DEFECTS), encoding="utf-8")
    runner = CliRunner()
    imported = runner.invoke(cli, ["import", str(path), "-o", str(tmp_path / "n.yml")])
    assert imported.exit_code == 0 and "warning: node 'if' field 'false'" in imported.stderr
    checked = runner.invoke(cli, ["validate", str(path)])
    assert checked.exit_code == 0 and checked.stdout.splitlines()[0] == "valid"
    assert "environment variable 'UNDECLARED' is not declared" in checked.stdout
    strict = runner.invoke(cli, ["validate", "--strict", str(path)])
    assert strict.exit_code == 2 and "--strict fails on warnings" in strict.stderr


def test_validate_lists_the_node_types_this_install_cannot_run(tmp_path: Any):
    trigger = {"id": "w", "type": "trigger-plugin", "title": "Hook",
               "plugin_unique_identifier": "acme/hook:1"}
    tool = {"id": "tl", "type": "tool", "title": "Search", "provider_id": "nowhere",
            "provider_type": "builtin", "tool_name": "web_search", "tool_parameters": {}}
    kr = {"id": "k", "type": "knowledge-retrieval", "title": "KB", "dataset_ids": ["ds-1"],
          "query_variable_selector": ["w", "q"], "retrieval_mode": "multiple"}
    doc = _doc([trigger, tool, kr], [("w", "source", "tl"), ("tl", "source", "k")])
    path = tmp_path / "needs.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    checked = CliRunner(env={"CELLWIRE_HOME": str(tmp_path / "home")}).invoke(
        cli, ["validate", str(path)])
    assert checked.exit_code == 0, checked.output
    (line,) = [x for x in checked.stdout.splitlines() if "cannot run:" in x]
    assert "knowledge-retrieval (needs a knowledge base)" in line
    assert "tool (needs a tool binding)" in line
    assert "trigger-plugin (not built here)" in line
    assert "trigger-webhook" not in line  # runnable since cellwire serve runs webhooks


def test_a_node_type_nothing_here_provides_imports_and_fails_at_run_time():
    # Dify's import keeps a node of a plugin's or a fork's type; its run fails at that node.
    fork = {"id": "x", "type": "fork-only-summarizer", "title": "Summarize", "length": 3}
    command = {"id": "c", "type": "command", "title": "Shell", "command": "ls",
               "working_directory": ""}
    doc = _doc([_start({"variable": "q"}), fork, command, _end(out=["x", "text"])],
               [("s", "source", "x"), ("x", "source", "c"), ("c", "source", "e")])
    imported = import_dify(doc)
    warned = {p.node_id: p for p in imported.problems}
    assert "fork-only-summarizer" in warned["x"].message and warned["x"].level == "warning"
    assert "command node" in warned["c"].message
    assert load_dify(dump_dify(imported.workflow)) == imported.workflow
    result = imported.workflow.run(q="hi")
    assert result.status is RunStatus.FAILED and result.error_node == "x"
    assert "fork-only-summarizer" in result.error


def test_an_unknown_type_with_braces_in_its_name_is_named_as_written():
    # Found by the importer's fuzz test: the placeholder's text is a format template.
    odd = {"id": "x", "type": "odd{type}}", "title": "Odd"}
    doc = _doc([_start({"variable": "q"}), odd, _end(out=["x", "text"])],
               [("s", "source", "x"), ("x", "source", "e")])
    imported = import_dify(doc)
    (warning,) = [p for p in imported.problems if p.node_id == "x"]
    assert "'odd{type}}'" in warning.message and warning.level == "warning"


MODEL = {"provider": "scripted", "name": "echo", "mode": "chat"}


@pytest.mark.parametrize(("node_type", "config"), [
    # Each null below is one graphon's entities read as empty or as their default.
    ("start", {"variables": [{"variable": "a", "type": "select", "options": None}]}),
    ("llm", {"model": MODEL, "prompt_template": [{"role": "user", "text": "hi"}],
             "prompt_config": {"jinja2_variables": None}}),
    ("http-request", {"method": "get", "url": "http://x", "body": {"type": "none", "data": None},
                      "authorization": {"type": "no-auth", "config": "left over"}}),
    ("parameter-extractor", {"model": MODEL, "query": ["s", "q"], "reasoning_mode": None,
                             "parameters": [{"name": "x", "type": "string", "options": None}]}),
    ("question-classifier", {"model": MODEL, "query_variable_selector": ["s", "q"],
                             "classes": [{"id": "1", "name": "a"}], "instruction": None}),
])
def test_nulls_dify_reads_as_empty_are_accepted(node_type: str, config: dict[str, Any]):
    from cellwire.model import registry

    parsed = registry.get(node_type).parse_config("n", config)
    assert parsed is not None
    if node_type == "parameter-extractor":
        assert parsed.reasoning_mode == "function_call" and parsed.parameters[0].options == []
    if node_type == "http-request":
        assert parsed.authorization.config is None and parsed.body.data == []


def test_retry_config_without_an_interval_retries_at_once_as_graphon_defaults():
    code = _code(retry_config={"retry_enabled": True, "max_retries": 2})
    wf = load_dify(_doc([_start({"variable": "q"}), code], [("s", "source", "c")]))
    assert (wf.nodes["c"].retry.max_retries, wf.nodes["c"].retry.interval) == (2, 0.0)
    assert load_dify(dump_dify(wf)) == wf
