"""Dify DSL 0.7.0 (Dify 1.16: portable Agent packages) imports and exports; an export can
target 0.6.0 for an older Dify, and refuses what 0.6.0 cannot hold (issue 15)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cellwire.cli import cli
from cellwire.engine import RunStatus
from cellwire.formats.dify import (
    DSL_VERSION,
    DSL_VERSIONS,
    dump_dify,
    export_dify,
    import_dify,
    load_dify,
)
from cellwire.model import WorkflowError

PLAIN = {"version": "0.6.0", "kind": "app", "app": {"name": "plain", "mode": "workflow"},
         "workflow": {"graph": {"nodes": [
             {"id": "s", "type": "custom", "data": {"type": "start", "title": "S",
                                                    "variables": [{"variable": "q"}]}},
             {"id": "e", "type": "custom", "data": {
                 "type": "end", "title": "E",
                 "outputs": [{"variable": "q", "value_selector": ["s", "q"]}]}}],
             "edges": [{"source": "s", "target": "e"}]}}}

AGENT_APP: dict[str, Any] = {
    "version": "0.7.0", "kind": "app", "app": {"name": "research", "mode": "workflow"},
    "agent_packages": {"agent_1": {"schema_version": 1, "metadata": {"name": "Researcher"},
                                   "soul": {"schema_version": 1}, "omitted_assets": []}},
    "workflow": {"graph": {"nodes": [
        {"id": "s", "type": "custom", "data": {"type": "start", "title": "S",
                                               "variables": [{"variable": "task"}]}},
        {"id": "a", "type": "custom", "data": {
            "type": "agent", "title": "Researcher", "version": "2",
            "agent_node_kind": "dify_agent",
            "agent_binding": {"binding_type": "inline_agent", "package_ref": "agent_1"},
            "agent_job": {"schema_version": 1, "mode": "tell_agent_what_to_do",
                          "workflow_prompt": "Research the request.",
                          "previous_node_output_refs": [{"selector": ["s", "task"]}],
                          "declared_outputs": [], "human_contacts": [], "metadata": {}}}},
        {"id": "e", "type": "custom", "data": {
            "type": "end", "title": "E",
            "outputs": [{"variable": "o", "value_selector": ["a", "text"]}]}}],
        "edges": [{"source": "s", "target": "a"}, {"source": "a", "target": "e"}]}}}


def test_export_writes_what_dify_1_16_writes_and_can_target_0_6_0():
    wf = load_dify(PLAIN)
    assert DSL_VERSION == "0.7.0" and DSL_VERSIONS == ("0.6.0", "0.7.0")
    assert export_dify(wf)["version"] == "0.7.0"
    older = export_dify(wf, "0.6.0")
    assert older["version"] == "0.6.0"
    assert {k: v for k, v in older.items() if k != "version"} == {
        k: v for k, v in export_dify(wf).items() if k != "version"}
    for version in DSL_VERSIONS:
        assert load_dify(dump_dify(wf, version)) == wf
    with pytest.raises(ValueError, match="0.6.0, 0.7.0"):
        export_dify(wf, "0.5.0")


def test_a_0_7_0_agent_app_imports_round_trips_and_its_agent_fails_naming_the_package():
    imported = import_dify(copy.deepcopy(AGENT_APP))
    (warning,) = [p for p in imported.problems if p.node_id == "a"]
    assert warning.field == "agent_binding" and "agent_1" in warning.message
    wf = imported.workflow
    again = export_dify(wf)
    assert again["agent_packages"] == AGENT_APP["agent_packages"]
    assert again["workflow"]["graph"]["nodes"][1]["data"]["agent_binding"] == {
        "binding_type": "inline_agent", "package_ref": "agent_1"}
    assert load_dify(dump_dify(wf)) == wf
    result = wf.run(task="x")
    assert result.status is RunStatus.FAILED and result.error_node == "a"
    assert "agent_1" in result.error and "agent_binding" in result.error


def test_0_6_0_cannot_hold_agent_packages():
    wf = load_dify(copy.deepcopy(AGENT_APP))
    with pytest.raises(WorkflowError) as caught:
        export_dify(wf, "0.6.0")
    named = {(p.node_id, p.field) for p in caught.value.problems}
    assert named == {("a", "agent_binding"), (None, "agent_packages")}


def test_a_newer_dsl_imports_with_a_warning():
    newer = {**copy.deepcopy(PLAIN), "version": "0.8.0"}
    (warning,) = import_dify(newer).problems
    assert warning.field == "version" and "0.8.0 is newer than 0.7.0" in warning.message
    assert not import_dify({**copy.deepcopy(PLAIN), "version": "0.7.0"}).problems


def test_cli_export_dsl_version(tmp_path: Any):
    source = tmp_path / "plain.yml"
    source.write_text(yaml.safe_dump(PLAIN), encoding="utf-8")
    runner = CliRunner()
    default = runner.invoke(cli, ["export", str(source), "-f", "dify"])
    assert default.exit_code == 0 and yaml.safe_load(default.stdout)["version"] == "0.7.0"
    older = runner.invoke(cli, ["export", str(source), "-f", "dify", "--dsl-version", "0.6.0"])
    assert older.exit_code == 0 and yaml.safe_load(older.stdout)["version"] == "0.6.0"
    unknown = runner.invoke(cli, ["export", str(source), "-f", "dify", "--dsl-version", "0.9"])
    assert unknown.exit_code == 2 and "use one of 0.6.0, 0.7.0" in unknown.output
    wrong_format = runner.invoke(cli, ["export", str(source), "--dsl-version", "0.6.0"])
    assert wrong_format.exit_code == 2 and "--format dify only" in wrong_format.output
    agents = tmp_path / "agents.yml"
    agents.write_text(yaml.safe_dump(AGENT_APP), encoding="utf-8")
    refused = runner.invoke(cli, ["export", str(agents), "-f", "dify", "--dsl-version",
                                  "0.6.0"])
    assert refused.exit_code == 2 and "cannot be written as DSL 0.6.0" in refused.stderr
