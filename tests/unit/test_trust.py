"""Trust by content hash: files are untrusted until the user trusts their exact contents."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import cellwire
from cellwire.cli import cli
from cellwire.formats.dify import import_dify
from cellwire.services import trust

FLOW = """\
cellwire: 1
name: with-code
nodes:
  - {id: start, type: start}
  - id: c
    type: code
    code: "def main():\\n    return {'x': 1}"
    outputs: {x: {type: number}}
  - {id: end, type: end, outputs: [{variable: x, value_selector: [c, x]}]}
edges:
  - {source: start, target: c}
  - {source: c, target: end}
"""


DIFY = """\
app: {name: coded, mode: workflow}
kind: app
version: 0.1.5
workflow:
  graph:
    nodes:
      - id: s
        data: {type: start, title: Start, variables: []}
      - id: c
        data:
          type: code
          title: Code
          code_language: python3
          code: "def main():\\n    return {'x': 1}"
          variables: []
          outputs: {x: {type: number}}
      - id: e
        data: {type: end, title: End, outputs: [{variable: x, value_selector: [c, x]}]}
    edges:
      - {source: s, target: c}
      - {source: c, target: e}
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    monkeypatch.setenv("CELLWIRE_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "flow.yml"
    path.write_text(FLOW, encoding="utf-8")
    return path


def test_workflows_built_in_python_are_trusted() -> None:
    wf = cellwire.Workflow("mine")
    assert wf.trusted and wf.origin is None


def test_a_loaded_file_is_untrusted_until_its_contents_are_trusted(config: Path,
                                                                   flow: Path) -> None:
    wf = cellwire.load(flow)
    assert not wf.trusted and wf.origin == str(flow) and wf.code_nodes() == ["c"]
    trust.trust(flow)
    assert cellwire.load(flow).trusted
    # Editing the file un-trusts it: trust is by content, not by name.
    flow.write_text(FLOW.replace("'x': 1", "'x': 2"), encoding="utf-8")
    assert not cellwire.load(flow).trusted


def test_trusted_keyword_overrides_the_records(config: Path, flow: Path) -> None:
    assert cellwire.load(flow, trusted=True).trusted
    trust.trust(flow)
    assert not cellwire.load(flow, trusted=False).trusted


def test_parsed_documents_and_imports_are_untrusted(flow: Path) -> None:
    from cellwire.formats import load_native

    assert not load_native(FLOW).trusted
    assert not import_dify(DIFY).workflow.trusted


def test_trust_survives_copies_and_pickling(flow: Path) -> None:
    import pickle

    wf = cellwire.load(flow)
    assert not wf.model_copy().trusted
    assert not pickle.loads(pickle.dumps(wf)).trusted


def test_records_are_private_and_live_in_the_user_config(config: Path, flow: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    # A project folder (the run home) that ships its own records trusts nothing.
    project = tmp_path / "project"
    (project / ".cellwire").mkdir(parents=True)
    fake = {"version": 1, "trusted": {trust.content_hash(FLOW): {"path": str(flow)}}}
    (project / ".cellwire" / "trusted.json").write_text(json.dumps(fake))
    monkeypatch.setenv("CELLWIRE_HOME", str(project / ".cellwire"))
    monkeypatch.chdir(project)
    assert not cellwire.load(flow).trusted
    trust.trust(flow)
    assert stat.S_IMODE(os.stat(config / "trusted.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o700


def test_an_unreadable_record_trusts_nothing(config: Path, flow: Path) -> None:
    trust.trust(flow)
    (config / "trusted.json").write_text("{not json")
    assert not cellwire.load(flow).trusted


def test_untrust_and_list(config: Path, flow: Path) -> None:
    digest = trust.trust(flow)
    assert [r["hash"] for r in trust.trusted_files()] == [digest]
    assert trust.untrust(flow) is True
    assert trust.untrust(flow) is False
    assert trust.trusted_files() == []


def test_describe_says_where_code_runs_and_how_to_trust(config: Path, flow: Path) -> None:
    text = trust.describe(cellwire.load(flow))
    assert text.startswith(f"{flow}: not trusted; its 1 code node (c) run in the sandbox")
    assert f"cellwire trust {flow}" in text
    trust.trust(flow)
    assert trust.describe(cellwire.load(flow)) == f"{flow}: trusted; its 1 code node (c) run " \
                                                  "in the kernel"


def test_cli_trust_validate_and_revoke(config: Path, flow: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["validate", str(flow)])
    assert out.exit_code == 0 and "not trusted; its 1 code node (c) run in the sandbox" in out.output
    out = runner.invoke(cli, ["trust", str(flow)])
    assert out.exit_code == 0 and "trusted (sha256:" in out.output
    out = runner.invoke(cli, ["validate", str(flow)])
    assert f"{flow}: trusted; its 1 code node (c) run in the kernel" in out.output
    out = runner.invoke(cli, ["trust", "--list"])
    assert str(flow.resolve()) in out.output
    out = runner.invoke(cli, ["trust", "--revoke", str(flow)])
    assert out.exit_code == 0 and "no longer trusted" in out.output
    assert "not trusted" in runner.invoke(cli, ["validate", str(flow)]).output


def test_cli_refuses_to_trust_an_invalid_file(config: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("cellwire: 1\nnodes: 3\n")
    out = CliRunner().invoke(cli, ["trust", str(bad)])
    assert out.exit_code == 2
    assert trust.trusted_files() == []


def test_cli_import_says_whether_the_file_is_trusted(config: Path, tmp_path: Path) -> None:
    dify = tmp_path / "app.yml"
    dify.write_text(DIFY, encoding="utf-8")
    out = CliRunner().invoke(cli, ["import", str(dify)])
    assert out.exit_code == 0, out.output
    assert f"{dify}: not trusted; its 1 code node (c) run in the sandbox" in out.stderr
    trust.trust(dify)
    out = CliRunner().invoke(cli, ["import", str(dify)])
    assert f"{dify}: trusted; its 1 code node (c) run in the kernel" in out.stderr
