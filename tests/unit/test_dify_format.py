"""Dify DSL import/export and export as Python, on small inline documents."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import cellwire
from cellwire.engine import RunStatus, Runtime
from cellwire.formats.dify import dump_dify, export_dify, import_dify, load_dify
from cellwire.formats.python_export import export_python
from cellwire.model import WorkflowError

LEGACY = """
app: {name: legacy, mode: workflow, icon: "\U0001F680"}
workflow:
  environment_variables:
    - {id: e1, name: API_KEY, value: leaked, value_type: secret}
    - {name: REGION, value: eu, value_type: string}
  graph:
    viewport: {x: 1, y: 2, zoom: 1}
    nodes:
      - id: s
        type: custom
        width: 244
        position: {x: 10, y: 20}
        data: {type: start, title: Start, selected: true,
               variables: [{variable: n, type: number, required: true}]}
      - id: cond
        type: custom
        data:
          type: if-else
          title: If
          logical_operator: and
          conditions:
            - {variable_selector: [s, n], comparison_operator: ">", value: "1"}
      - id: agg
        type: custom
        data: {type: variable-assigner, title: Agg, output_type: number,
               variables: [[s, n]]}
      - id: code
        type: custom
        data:
          type: code
          title: Code
          code_language: python3
          code: "def main(q):\\n    return {'q': q}\\n"
          variables: [{variable: q, value_selector: [s, sys.query]}]
          outputs: {q: {type: string}}
          error_strategy: default-value
          default_value: [{key: q, type: object, value: '{"a": 1}'}]
          retry_config: {retry_enabled: true, max_retries: 2, retry_interval: 500}
      - id: e
        type: custom
        data: {type: end, title: End, outputs: [{variable: out, value_selector: [agg, output]}]}
      - id: note1
        type: custom-note
        position: {x: 0, y: 0}
        data: {type: '', text: remember me, theme: yellow}
    edges:
      - {source: s, target: cond}
      - {source: cond, sourceHandle: 'true', target: agg}
      - {source: cond, sourceHandle: 'false', target: agg}
      - {source: s, target: code}
      - {source: agg, target: e}
"""


def test_import_maps_the_wrapper_and_modernises_legacy_forms() -> None:
    result = import_dify(LEGACY, source="legacy.yml")
    wf = result.workflow
    assert (wf.name, wf.mode) == ("legacy", "workflow")
    assert wf.meta["dify"]["app"] == {"icon": "\U0001F680"}
    assert wf.meta["dify"]["graph"] == {"viewport": {"x": 1, "y": 2, "zoom": 1}}
    start = wf.nodes["s"]
    assert start.position is not None and (start.position.x, start.position.y) == (10, 20)
    assert start.meta == {"dify": {"width": 244, "data": {"selected": True}}}
    assert "selected" not in start.config
    assert wf.nodes["agg"].type == "variable-aggregator"
    assert wf.nodes["cond"].config["cases"][0]["case_id"] == "true"
    code = wf.nodes["code"]
    assert code.config["variables"][0]["value_selector"] == ["sys", "query"]
    assert code.error_strategy == "default-value"
    assert code.default_value == {"q": {"a": 1}}
    assert (code.retry.max_retries, code.retry.interval, code.retry.backoff) == (2, 0.5, 1.0)
    assert [n.text for n in wf.notes] == ["remember me"]
    secret = wf.environment[0]
    assert secret.value is None  # never taken from the file
    assert any(p.field and "environment_variables[0]" in p.field for p in result.problems)


def test_export_then_import_gives_the_same_workflow() -> None:
    wf = load_dify(LEGACY)
    document = export_dify(wf)
    assert document["version"] == "0.7.0"  # what Dify 1.16 writes
    assert document["workflow"]["environment_variables"][0]["value"] == ""
    edge_ids = [e["id"] for e in document["workflow"]["graph"]["edges"]]
    assert "cond-true-agg-target" in edge_ids
    assert load_dify(dump_dify(wf)) == wf


async def test_imported_legacy_workflow_runs() -> None:
    wf = load_dify(LEGACY)
    wf.remove_node("code")
    result = await wf.arun(n=3)
    assert result.status is RunStatus.SUCCEEDED
    assert result.outputs == {"out": 3}


def test_a_workflow_built_in_python_survives_dify_and_python_export() -> None:
    wf = cellwire.Workflow("built", mode="workflow")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "text-input"}])
    wf.add_node("http", "http-request", after="start", method="get", url="http://127.0.0.1:1",
                timeout={"connect": 1}, retry=3, max_time=5.0)
    wf.add_node("end", "end", after="http", title="",
                outputs=[{"variable": "y", "value_selector": ["start", "x"]}])
    wf.nodes["end"].title = ""
    assert load_dify(dump_dify(wf)) == wf
    namespace: dict[str, Any] = {}
    exec(export_python(wf), namespace)  # noqa: S102
    assert namespace["wf"] == wf


def test_python_export_is_readable_code_on_the_public_api() -> None:
    source = export_python(load_dify(LEGACY))
    assert "wf = cellwire.Workflow(" in source
    assert "wf.add_node(\n    'cond',\n    'if-else',\n    title='If'," in source
    assert "wf.connect('cond', 'agg', 'true')" in source
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102
    assert namespace["wf"] == load_dify(LEGACY)


TOOL = """
app: {name: tools, mode: workflow}
workflow:
  graph:
    nodes:
      - id: s
        data: {type: start, title: Start, variables: [{variable: city, type: text-input}]}
      - id: weather
        data:
          type: tool
          title: Weather
          provider_id: weather
          provider_type: builtin
          provider_name: weather
          tool_name: forecast
          tool_parameters:
            city: {type: mixed, value: "{{#s.city#}}"}
      - id: e
        data: {type: end, title: End, outputs: [{variable: out, value_selector: [weather, text]}]}
    edges:
      - {source: s, target: weather}
      - {source: weather, target: e}
"""


async def test_a_dify_tool_imports_with_a_problem_and_fails_at_its_node() -> None:
    result = import_dify(TOOL)
    [problem] = result.problems
    assert (problem.node_id, problem.field, problem.level) == ("weather", "tool_name", "warning")
    assert "'weather/forecast', which is not registered" in problem.message
    assert "@cellwire.tool(name='forecast', provider='weather')" in problem.hint
    # Unbound, it still exports unchanged.
    assert export_dify(result.workflow)["workflow"]["graph"]["nodes"][1]["data"]["tool_name"] \
        == "forecast"
    run = await result.workflow.arun(city="Oslo", store=False)
    assert run.status is RunStatus.FAILED
    assert run.error_node == "weather"
    assert "the tool 'weather/forecast' is not registered" in run.error
    assert "--tools tools.py" in run.error
    assert run.node_status("s") == "succeeded"


async def test_a_dify_tool_runs_when_a_python_tool_of_its_name_is_registered() -> None:
    from cellwire.services.tools import ToolRegistry

    def forecast(city: str) -> str:
        return f"sunny in {city}"

    workflow = load_dify(TOOL)
    run = await workflow.arun({"city": "Oslo"}, runtime=Runtime(tools=ToolRegistry([forecast])),
                              store=False)
    assert run.status is RunStatus.SUCCEEDED
    assert run.outputs == {"out": "sunny in Oslo"}


@pytest.mark.parametrize(
    ("text", "node", "field"),
    [
        ("app: {mode: agent}\nworkflow: {graph: {nodes: []}}\n", None, "app.mode"),
        ("app: {mode: chat}\nworkflow: {graph: {nodes: []}}\n", None, "model_config"),
        ("app: {mode: workflow}\nworkflow: {graph: {nodes: [{id: a, data: {title: A}}]}}\n",
         "a", "data.type"),
        ("app: {mode: workflow}\nworkflow: {graph: {nodes: 3}}\n", None, "workflow.graph.nodes"),
        (("app: {mode: workflow}\nworkflow: {graph: {nodes: [{id: a, data: {type: start}, "
         "position: {x: left}}]}}\n"), "a", "position.x"),
        (("app: {mode: workflow}\nworkflow: {graph: {nodes: [{id: a, data: {type: start, "
         "retry_config: {retry_enabled: true, max_retries: 1000}}}]}}\n"), "a",
         "data.retry_config"),
    ],
)
def test_broken_documents_name_the_part(text: str, node: str | None, field: str) -> None:
    with pytest.raises(WorkflowError) as caught:
        import_dify(text)
    assert any(p.node_id == node and (p.field or "").startswith(field)
               for p in caught.value.problems), str(caught.value)


async def test_dead_branch_of_a_workflow_app_is_a_warning_and_a_run_taking_it_ends_there(
        ) -> None:
    doc = yaml.safe_load(LEGACY)
    doc["workflow"]["graph"]["edges"] = [e for e in doc["workflow"]["graph"]["edges"]
                                         if e.get("sourceHandle") != "false"]
    imported = import_dify(doc)  # Dify imports it: the else branch just ends the run
    (dead,) = [p for p in imported.problems if p.node_id == "cond"]
    assert (dead.field, dead.level) == ("false", "warning") and "else branch" in dead.message
    wf = imported.workflow
    wf.remove_node("code")
    taken = await wf.arun(n=0)  # 0 > 1 is false: the else branch, which leads nowhere
    assert taken.status is RunStatus.SUCCEEDED and taken.outputs == {}
    assert (await wf.arun(n=3)).outputs == {"out": 3}
    doc["app"]["mode"] = "advanced-chat"  # a chatflow may end a turn on purpose
    assert not [p for p in import_dify(doc).problems if p.node_id == "cond"]


def test_cli_import_and_export(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from cellwire.cli import cli
    from cellwire.formats import load

    source = tmp_path / "tools.yml"
    source.write_text(TOOL, encoding="utf-8")
    runner = CliRunner()
    imported = runner.invoke(cli, ["import", str(source), "-o", str(tmp_path / "native.yml")])
    assert imported.exit_code == 0, imported.output
    assert "uses the tool 'weather/forecast', which is not registered" in imported.output
    assert load(tmp_path / "native.yml") == load_dify(TOOL)
    for fmt in ("dify", "python", "yaml"):
        out = tmp_path / f"out.{fmt}"
        exported = runner.invoke(cli, ["export", str(tmp_path / "native.yml"), "-f", fmt,
                                       "-o", str(out)])
        assert exported.exit_code == 0, exported.output
    assert load_dify(yaml.safe_load((tmp_path / "out.dify").read_text())) == load_dify(TOOL)
    namespace: dict[str, Any] = {}
    exec((tmp_path / "out.python").read_text(), namespace)  # noqa: S102
    assert namespace["wf"] == load_dify(TOOL)
    broken = tmp_path / "broken.yml"
    broken.write_text("app: {mode: agent}\nworkflow: {graph: {}}\n", encoding="utf-8")
    refused = runner.invoke(cli, ["import", str(broken)])
    assert refused.exit_code == 2 and "app.mode" in refused.output


def test_start_variables_without_a_label_are_exported_with_their_name_as_dify_requires() -> None:
    wf = cellwire.Workflow("labels")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "text-input"},
                                             {"variable": "y", "label": "Why", "type": "number"}])
    data = next(n["data"] for n in export_dify(wf)["workflow"]["graph"]["nodes"]
                if n["id"] == "start")
    # graphon's StartNodeData (and Dify's loader) refuse a variable without a label.
    assert [v["label"] for v in data["variables"]] == ["x", "Why"]
    assert load_dify(dump_dify(wf)) == wf  # the label the export added is not kept
