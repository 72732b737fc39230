"""cellwire diff: two versions of a workflow, node by node, by file or by stored run."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import cellwire
from cellwire.cli import cli
from cellwire.model.diff import Change, diff
from cellwire.store import open_store


def base() -> cellwire.Workflow:
    wf = cellwire.Workflow("d")
    wf.environment = [cellwire.model.EnvironmentVariable(name="TOKEN", value_type="secret")]
    wf.add_node("start", "start")
    wf.add_node("draft", "template-transform", after="start", template="a")
    wf.add_node("end", "end", after="draft", outputs=[])
    return wf


def edited() -> cellwire.Workflow:
    wf = base()
    wf.update_node("draft", template="b")
    wf.nodes["draft"].title = "renamed"  # titles never change a run: not a difference
    wf.add_node("check", "template-transform", after="draft", template="c")
    wf.disconnect("draft", "end")
    wf.connect("check", "end")
    wf.environment = []
    return wf


def test_diff_names_nodes_fields_and_edges_never_values() -> None:
    changes = diff(base(), edited())
    assert [str(c) for c in changes] == [
        "~ node draft: config.template",
        "+ node check (template-transform)",
        "+ edge check -> end",
        "+ edge draft -> check",
        "- edge draft -> end",
        "- environment TOKEN",
    ]
    assert diff(base(), base()) == []
    assert isinstance(changes[0], Change)


def test_cli_diff_of_files_and_of_stored_runs(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    cellwire.save(base(), a)
    cellwire.save(edited(), b)
    runner = CliRunner()
    same = runner.invoke(cli, ["diff", str(a), str(a)])
    assert (same.exit_code, same.output) == (0, "no changes\n")
    differs = runner.invoke(cli, ["diff", str(a), str(b), "--json"])
    assert differs.exit_code == 1
    assert json.loads(differs.output)[0] == {"what": "node", "name": "draft", "kind": "changed",
                                             "fields": ["config.template"]}
    db = tmp_path / "runs.db"
    store = open_store(db)
    first, second = base().run(store=store), edited().run(store=store)
    by_run = runner.invoke(cli, ["diff", first.run_id[:8], second.run_id, "--db", str(db)])
    assert by_run.exit_code == 1 and "~ node draft: config.template" in by_run.output
    missing = runner.invoke(cli, ["diff", "nope", str(a), "--db", str(db)])
    assert missing.exit_code == 2 and "nope is not a file" in missing.stderr
