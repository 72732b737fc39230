"""The runner: one long-lived loop behind blocking calls (connections reused across
``wf.run()``), a registry of runs that take commands from any thread, and the layering rule
that the model never imports the layers above it."""

from __future__ import annotations

import ast
import sys
import threading
from pathlib import Path

import pytest

import cellwire
from cellwire import runner as runner_module
from cellwire.runner import Runner, default_runner
from cellwire.store import open_store

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(60)

SRC = Path(cellwire.__file__).parent


def chat_workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("chat")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("llm", "llm", after="start", model={"provider": "openai", "name": "gpt-4o-mini"},
                prompt_template=[{"role": "user", "text": "{{#start.q#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


def napping(name: str, seconds: float) -> cellwire.Workflow:
    """start -> a code node that sleeps ``seconds`` -> end."""
    wf = cellwire.Workflow(name)
    wf.add_node("start", "start")
    wf.add_node("nap", "code", after="start",
                code=f"import time\ndef main():\n    time.sleep({seconds})\n    return {{'x': 1}}")
    wf.add_node("end", "end", after="nap",
                outputs=[{"variable": "x", "value_selector": ["nap", "x"]}])
    return wf


def test_blocking_runs_share_one_loop_and_reuse_the_connection(monkeypatch):
    with llm_server("openai", keepalive=True) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        runner = Runner(store=False)
        wf = chat_workflow()
        first = runner.run(wf, {"q": "one"})
        second = runner.run(wf, {"q": "two"})
        assert (first.outputs, second.outputs) == ({"text": "echo: one"},
                                                   {"text": "echo: two"})
        # asyncio.run per call would have closed the pool with its loop: two connections.
        assert server.connections == 1


def test_a_run_started_in_the_background_is_stopped_by_id_from_another_thread(tmp_path):
    store = open_store(tmp_path / "runs.db")
    wf = napping("sleepy", 5)
    runner = Runner(store=store)
    handle = runner.submit(wf)
    assert runner.get(handle.run_id) is handle and not handle.done
    stopper = threading.Thread(target=runner.stop, args=(handle.run_id, "enough"))
    stopper.start()
    stopper.join()
    result = handle.wait(timeout=20)
    assert str(result.status) == "stopped" and result.error == "enough"
    assert store.run(handle.run_id)["status"] == "stopped"
    with pytest.raises(KeyError, match="no run 'nope'"):
        runner.get("nope")


def test_wf_run_blocks_on_the_default_runner_and_registers_the_run():
    wf = cellwire.Workflow("hello")
    wf.add_node("start", "start", variables=[{"variable": "name", "type": "text-input"}])
    wf.add_node("end", "end", after="start",
                outputs=[{"variable": "name", "value_selector": ["start", "name"]}])
    result = wf.run(name="Ada", store=False)
    assert result.outputs == {"name": "Ada"}
    assert default_runner().get(result.run_id).result is result
    # store=None means no store, as store=False does; leaving it out means the default one.
    assert wf.run(name="Ada", store=None).stored is None


def test_the_background_loop_is_uvloops_and_times_nodes_to_the_microsecond():
    """uvloop's own clock counts whole milliseconds, once a turn: a run on it times its
    nodes by the system's monotonic clock instead."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (Windows)")
    assert isinstance(runner_module.background.loop, uvloop.Loop)
    wf = napping("timed", 0.0013)
    elapsed = wf.run(store=False).trace.set_index("node_id")["elapsed_ms"]
    assert 1.3 <= elapsed["nap"] < 1000
    # On whole milliseconds every figure would be within float error of an integer.
    assert any(abs(ms - round(ms)) > 1e-3 for ms in elapsed), elapsed.tolist()


@pytest.mark.parametrize(("choice", "kind"), [("asyncio", "asyncio"), ("uvloop", "uvloop"),
                                              ("", "uvloop")])
def test_cellwire_event_loop_chooses_the_background_loop(monkeypatch, choice, kind):
    if kind == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed (Windows)")
    monkeypatch.setenv(runner_module.EVENT_LOOP_ENV, choice)
    loop = runner_module.new_event_loop()
    try:
        assert type(loop).__module__.split(".")[0] == kind
    finally:
        loop.close()


def test_an_unknown_event_loop_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv(runner_module.EVENT_LOOP_ENV, "trio")
    with pytest.raises(ValueError, match="CELLWIRE_EVENT_LOOP='trio': use 'uvloop' or 'asyncio'"):
        runner_module.new_event_loop()


def test_the_runners_own_store_applies_when_a_call_names_none(tmp_path):
    wf = cellwire.Workflow("hello")
    wf.add_node("start", "start")
    wf.add_node("end", "end", after="start", outputs=[])
    runner = Runner(store=tmp_path / "mine.db")
    result = runner.run(wf)
    assert result.stored is True
    assert result.run_id in set(open_store(tmp_path / "mine.db").runs().run_id)


def _imports(folder: Path) -> set[str]:
    found: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(("layer", "above"), [
    ("model", ("cellwire.api", "cellwire.runner", "cellwire.engine", "cellwire.jupyter",
               "cellwire.scale", "cellwire.cli", "cellwire.store", "cellwire.services")),
    ("engine", ("cellwire.api", "cellwire.runner", "cellwire.jupyter", "cellwire.scale",
                "cellwire.cli", "cellwire.store")),
    ("nodes", ("cellwire.api", "cellwire.runner", "cellwire.jupyter", "cellwire.scale",
               "cellwire.cli", "cellwire.store")),
])
def test_layers_never_import_the_layers_above_them(layer, above):
    imported = _imports(SRC / layer)
    assert sorted(m for m in imported if m.startswith(above)) == []


async def test_the_registry_keeps_every_running_run_and_the_newest_finished_ones(monkeypatch):
    monkeypatch.setattr(runner_module, "KEEP_FINISHED", 3)
    wf = cellwire.Workflow("kept")
    wf.add_node("start", "start")
    wf.add_node("end", "end", after="start", outputs=[])
    slow = cellwire.Workflow("slow")
    slow.add_node("start", "start")
    slow.add_node("wait", "code", after="start",
                  code="import time\ndef main():\n    time.sleep(1)\n    return {}\n")
    runner = Runner(store=False)
    held = runner.start(slow)  # still running while the others end
    ended = [await runner.start(wf) for _ in range(5)]
    kept = {h.run_id for h in runner.runs()}
    assert held.run_id in kept
    assert kept == {held.run_id, *(h.run_id for h in ended[-2:])}
    await held
