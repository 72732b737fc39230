"""Node fingerprints, stale tracking (``cellwire.stale``, ``run(stale=True)``,
``%workflow run NAME --stale``) and the node cache, on real runs whose code nodes leave a mark
in a file each time they execute."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import cellwire
from cellwire import Workflow
from cellwire.engine import compile_workflow
from cellwire.engine.fingerprint import fingerprints
from cellwire.engine.plan import rerun_plan
from cellwire.jupyter import dashboards
from cellwire.jupyter.magics import WorkflowMagics
from cellwire.jupyter.session import Session
from cellwire.jupyter.widget import WorkflowWidget
from cellwire.runner import Runner


def counting_code(log: Path, name: str, expression: str) -> str:
    """A code node body that appends ``name`` to ``log`` each time it runs."""
    return (f"def main(x):\n    with open({str(log)!r}, 'a') as f:\n"
            f"        f.write({name!r} + '\\n')\n    return {{'y': {expression}}}\n")


def ran(log: Path) -> list[str]:
    """The code nodes that ran, sorted (independent branches run in either order)."""
    return sorted(log.read_text().split()) if log.exists() else []


def diamond(log: Path) -> Workflow:
    """start -> a (code) -> b (template) -> end, and start -> c (code) -> end."""
    wf = Workflow("diamond")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "number",
                                                 "required": True}])
    wf.add_node("a", "code", code=counting_code(log, "a", "x + 1"),
                variables=[{"variable": "x", "value_selector": ["start", "x"]}],
                outputs={"y": {"type": "number"}})
    wf.add_node("b", "template-transform", template="b={{ y }}",
                variables=[{"variable": "y", "value_selector": ["a", "y"]}])
    wf.add_node("c", "code", code=counting_code(log, "c", "x * 10"),
                variables=[{"variable": "x", "value_selector": ["start", "x"]}],
                outputs={"y": {"type": "number"}})
    wf.add_node("end", "end", outputs=[{"variable": "b", "value_selector": ["b", "output"]},
                                       {"variable": "c", "value_selector": ["c", "y"]}])
    for source, target in [("start", "a"), ("a", "b"), ("start", "c"), ("b", "end"),
                           ("c", "end")]:
        wf.connect(source, target)
    return wf


# -- fingerprints -------------------------------------------------------------------------


def test_an_edit_upstream_changes_every_fingerprint_downstream_and_no_other(tmp_path):
    wf = diamond(tmp_path / "log")
    before = fingerprints(compile_workflow(wf))
    wf.nodes["a"].config["code"] = counting_code(tmp_path / "log", "a", "x + 2")
    after = fingerprints(compile_workflow(wf))
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {"a", "b", "end"}


def test_what_never_changes_a_run_changes_no_fingerprint(tmp_path):
    wf = diamond(tmp_path / "log")
    before = fingerprints(compile_workflow(wf))
    wf.nodes["b"].title = "renamed"
    wf.nodes["b"].meta = {"cell_id": "x"}
    wf.nodes["b"].position = None
    assert fingerprints(compile_workflow(wf)) == before


@pytest.mark.parametrize("edit", [
    lambda n: setattr(n, "max_time", 5.0),
    lambda n: setattr(n, "error_strategy", "default-value"),
    lambda n: setattr(n, "retry", cellwire.Retry(max_retries=2)),
])
def test_policies_are_part_of_the_fingerprint(tmp_path, edit):
    wf = diamond(tmp_path / "log")
    before = fingerprints(compile_workflow(wf))
    edit(wf.nodes["c"])
    after = fingerprints(compile_workflow(wf))
    assert {n for n in before if before[n] != after[n]} == {"c", "end"}


def test_the_run_model_counts_only_for_nodes_that_call_a_model(tmp_path):
    wf = diamond(tmp_path / "log")
    wf.add_node("ask", "llm", model={"provider": "scripted", "name": "echo", "mode": "chat"},
                prompt_template=[{"role": "user", "text": "{{#b.output#}}"}])
    wf.connect("b", "ask")
    compiled = compile_workflow(wf)
    plain, routed = fingerprints(compiled), fingerprints(compiled, "scripted/other")
    assert {n for n in plain if plain[n] != routed[n]} == {"ask"}


def test_a_selector_reference_without_an_edge_is_a_dependency(tmp_path):
    wf = diamond(tmp_path / "log")
    # end reads c.y through its selector; the edge c -> end goes, the dependency stays.
    wf.disconnect("c", "end")
    wf.connect("a", "end")
    before = fingerprints(compile_workflow(wf))
    wf.nodes["c"].config["code"] = counting_code(tmp_path / "log", "c", "x * 11")
    after = fingerprints(compile_workflow(wf))
    assert {n for n in before if before[n] != after[n]} == {"c", "end"}


def test_an_edit_inside_an_iteration_changes_the_iteration():
    wf = Workflow("it")
    wf.add_node("start", "start", variables=[{"variable": "xs", "type": "json_object"}])
    wf.add_node("loop", "iteration", iterator_selector=["start", "xs"],
                output_selector=["t", "output"])
    wf.add_node("loop_start", "iteration-start", parent="loop")
    wf.add_node("t", "template-transform", parent="loop", template="{{ item }}!",
                variables=[{"variable": "item", "value_selector": ["loop", "item"]}])
    wf.connect("loop_start", "t")
    wf.add_node("other", "template-transform", template="x")
    wf.add_node("end", "end", outputs=[{"variable": "out", "value_selector": ["loop", "output"]}])
    wf.connect("start", "loop")
    wf.connect("start", "other")
    wf.connect("loop", "end")
    before = fingerprints(compile_workflow(wf))
    wf.nodes["t"].config["template"] = "{{ item }}?"
    after = fingerprints(compile_workflow(wf))
    assert {n for n in before if before[n] != after[n]} == {"t", "loop", "end"}


# -- a rerun from several nodes --------------------------------------------------------------


def test_rerun_plan_from_two_nodes_runs_both_and_what_follows():
    wf = diamond(Path("/nonexistent"))
    compiled = compile_workflow(wf)
    handles = {n: "source" for n in compiled.nodes}
    sub, taken = rerun_plan(compiled.graphs[None], ["b", "c"], single=False, handles=handles,
                            branching=compiled.branching)
    assert set(sub.roots) == {"b", "c"}
    assert set(sub.in_count) == {"b", "c", "end"}
    assert sub.in_count["end"] == 2 and taken == {}
    # The one-node form is unchanged.
    one, _ = rerun_plan(compiled.graphs[None], "a", single=False, handles=handles,
                        branching=compiled.branching)
    assert one.roots == ("a",) and set(one.in_count) == {"a", "b", "end"}


# -- stale tracking through the runner --------------------------------------------------------


def test_stale_lists_edited_nodes_and_their_downstream_and_runs_only_those(tmp_path):
    log = tmp_path / "log"
    wf = diamond(log)
    runner = Runner(store=False)
    assert runner.stale(wf, {"x": 1}).nodes == ("start", "a", "b", "c", "end")
    first = runner.run(wf, {"x": 1})
    assert first.outputs == {"b": "b=2", "c": 10}
    assert ran(log) == ["a", "c"] and runner.stale(wf).nodes == ()

    wf.nodes["a"].config["code"] = counting_code(log, "a", "x + 5")
    assert runner.stale(wf).nodes == ("a", "b", "end")
    second = runner.run(wf, stale=True)  # the inputs are the last run's
    assert second.outputs == {"b": "b=6", "c": 10}
    assert ran(log) == ["a", "a", "c"]  # c kept its result
    trace = second.trace
    assert sorted(trace.node_id) == ["a", "b", "end"]
    assert all(m.get("stale") for m in trace.metadata)
    assert runner.stale(wf).nodes == ()


def test_nothing_stale_runs_nothing_and_returns_the_last_run(tmp_path):
    log = tmp_path / "log"
    wf = diamond(log)
    runner = Runner(store=False)
    first = runner.run(wf, {"x": 1})
    again = runner.run(wf, stale=True)
    assert again is first and ran(log) == ["a", "c"]


def test_a_changed_input_makes_the_start_node_and_all_after_it_stale(tmp_path):
    log = tmp_path / "log"
    wf = diamond(log)
    runner = Runner(store=False)
    runner.run(wf, {"x": 1})
    assert runner.stale(wf, {"x": 1}).nodes == ()
    assert runner.stale(wf, {"x": 2}).nodes == ("start", "a", "b", "c", "end")
    result = runner.run(wf, {"x": 2}, stale=True)
    assert result.outputs == {"b": "b=3", "c": 20}


def test_a_failed_node_stays_stale_until_it_succeeds(tmp_path):
    log = tmp_path / "log"
    wf = diamond(log)
    wf.nodes["c"].config["code"] = "def main(x):\n    raise ValueError('no')\n"
    runner = Runner(store=False)
    assert runner.run(wf, {"x": 1}).status == "failed"
    assert set(runner.stale(wf).nodes) >= {"c", "end"}
    wf.nodes["c"].config["code"] = counting_code(log, "c", "x * 10")
    result = runner.run(wf, stale=True)
    assert result.status == "succeeded" and result.outputs["c"] == 10
    assert runner.stale(wf).nodes == ()


def test_cellwire_stale_and_wf_run_stale_use_the_process_runner(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    log = tmp_path / "log"
    wf = diamond(log)
    wf.run(x=1, store=False)
    assert cellwire.stale(wf) == []
    wf.nodes["b"].config["template"] = "B={{ y }}"
    assert cellwire.stale(wf) == ["b", "end"]
    assert wf.run(stale=True, store=False).outputs == {"b": "B=2", "c": 10}
    assert ran(log) == ["a", "c"]


# -- the node cache -------------------------------------------------------------------------


def test_the_node_cache_answers_pure_nodes_with_the_same_inputs(tmp_path):
    log = tmp_path / "log"
    wf = diamond(log)
    runner = Runner(store=False, node_cache=True)
    runner.run(wf, {"x": 1})
    again = runner.run(wf, {"x": 1})
    assert ran(log) == ["a", "c"]  # answered from the cache, not run
    statuses = {row.node_id: bool(row.metadata.get("cached")) for row in again.trace.itertuples()}
    assert statuses == {"start": False, "a": True, "b": True, "c": True, "end": False}
    assert again.outputs == {"b": "b=2", "c": 10}
    runner.run(wf, {"x": 2})  # other values read: run
    assert ran(log) == ["a", "a", "c", "c"]
    wf.nodes["c"].config["code"] = counting_code(log, "c", "x * 100")
    assert runner.run(wf, {"x": 2}).outputs["c"] == 200  # another fingerprint: run
    assert ran(log) == ["a", "a", "c", "c", "c"]
    assert runner.node_cache.hits == 5  # a, b, c; then a, b


def test_without_the_node_cache_every_run_executes(tmp_path):
    log = tmp_path / "log"
    wf = diamond(log)
    runner = Runner(store=False)
    runner.run(wf, {"x": 1})
    runner.run(wf, {"x": 1})
    assert ran(log) == ["a", "a", "c", "c"]


# -- the magics and the editor ----------------------------------------------------------------


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    ip = InteractiveShell(config=Config({"HistoryManager": {"enabled": False}}))
    magics = WorkflowMagics(ip, session=Session())
    ip.register_magics(magics)
    ip.magics_obj = magics
    yield ip
    magics.node_cache = False


def define(ip, log: Path, b_template: str = "b={{ a.y }}") -> None:
    ip.run_cell_magic("workflow", "w start --type start", "x: number")
    ip.run_cell_magic("workflow", "w a --type code --var x=start.x --out y:number",
                      counting_code(log, "a", "x + 1"))
    ip.run_cell_magic("workflow", "w b --type template-transform", b_template)
    ip.run_cell_magic("workflow", "w c --type code --var x=start.x --out y:number",
                      counting_code(log, "c", "x * 10"))
    ip.run_cell_magic("workflow", "w end --type end", "b: b.output\nc: c.y")


def test_magic_run_stale_reruns_only_the_edited_cell_and_what_follows(shell, tmp_path, capsys):
    log = tmp_path / "log"
    define(shell, log)
    first = shell.run_line_magic("workflow", "run w x=1 --wait")
    assert first.outputs == {"b": "b=2", "c": 10} and ran(log) == ["a", "c"]
    shell.run_cell_magic("workflow", "w b --type template-transform", "B={{ a.y }}")
    capsys.readouterr()
    second = shell.run_line_magic("workflow", "run w --stale --wait")
    assert "running 2 stale node(s) of w: b, end" in capsys.readouterr().out
    assert second.outputs == {"b": "B=2", "c": 10}
    assert ran(log) == ["a", "c"]  # neither code node ran again
    frame = dashboards.trace(second)
    assert set(frame.node_id) == {"b", "end"} and frame.stale.all()

    third = shell.run_line_magic("workflow", "run w --stale --wait")
    assert third is second
    assert "nothing is stale: w is up to date" in capsys.readouterr().out


def test_magic_run_without_stale_answers_unchanged_pure_nodes_from_the_cache(shell, tmp_path):
    log = tmp_path / "log"
    define(shell, log)
    shell.run_line_magic("workflow", "run w x=1 --wait")
    again = shell.run_line_magic("workflow", "run w x=1 --wait")
    assert ran(log) == ["a", "c"]
    cached = {e.node_id for e in again.events
              if type(e).__name__ == "NodeSucceeded" and e.metadata.get("cached")}
    assert cached == {"a", "b", "c"}
    shell.run_line_magic("config", "WorkflowMagics.node_cache = False")
    shell.run_line_magic("workflow", "run w x=1 --wait")
    assert ran(log) == ["a", "a", "c", "c"]


def test_the_editor_syncs_the_stale_nodes_and_shows_cached_ones(shell, tmp_path):
    log = tmp_path / "log"
    define(shell, log)
    wf = shell.magics_obj.session.workflows["w"]
    editor = WorkflowWidget(wf)
    assert editor.stale == ["start", "a", "b", "c", "end"]  # never ran
    shell.run_line_magic("workflow", "run w x=1 --wait")
    assert editor.stale == []
    editor.handle({"type": "update_config", "id": "c", "path": "code",
                   "value": counting_code(log, "c", "x * 2")})
    assert editor.stale == ["c", "end"]
    shell.run_line_magic("workflow", "run w x=1 --wait")
    assert editor.stale == []
    assert editor.status["a"]["status"] == "cached"
    assert editor.status["c"]["status"] == "succeeded"
    editor.close()
