"""The editor widget's kernel side: browser messages change the Workflow in place, refused
edits say why, and run events become status patches (from widget runs and from wf.arun)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import cellwire
from cellwire.jupyter import widget as widget_module
from cellwire.jupyter.magics import Picture, WorkflowMagics
from cellwire.jupyter.session import Session
from cellwire.jupyter.widget import WorkflowWidget
from cellwire.model import EnvironmentVariable
from cellwire.runner import default_runner


class Recorder(WorkflowWidget):
    """A widget whose messages to the browser are kept, not sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.outbox: list[dict[str, Any]] = []
        super().__init__(*args, **kwargs)

    def send(self, content: Any, buffers: Any = None) -> None:  # type: ignore[override]
        self.outbox.append(content)


def qa() -> cellwire.Workflow:
    wf = cellwire.Workflow("qa")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "text-input"}])
    wf.add_node("t", "template-transform", after="start", template="Q: {{ q }}",
                variables=[{"variable": "q", "value_selector": ["start", "q"]}])
    wf.add_node("end", "end", after="t", outputs=[{"variable": "out",
                                                  "value_selector": ["t", "output"]}])
    return wf


def by_id(widget: WorkflowWidget) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in widget.nodes}


def test_the_widget_edits_the_workflow_it_was_given():
    wf = qa()
    w = wf.widget()
    assert isinstance(w, WorkflowWidget) and w.workflow is wf
    assert [n["id"] for n in w.nodes] == ["start", "t", "end"]
    assert {(e["source"], e["target"], e["source_handle"]) for e in w.edges} == {
        ("start", "t", "source"), ("t", "end", "source")}
    assert by_id(w)["t"]["summary"] == "Q: {{ q }}"
    assert {t["name"] for t in w.node_types} >= {"llm", "code", "if-else", "iteration"}
    assert w.problems == []


def test_branch_and_fail_handles_and_containers_come_first():
    wf = cellwire.Workflow("b")
    wf.add_node("start", "start")
    wf.add_node("if", "if-else", after="start", cases=[
        {"case_id": "big", "conditions": [{"variable_selector": ["sys", "query"],
                                            "comparison_operator": "not empty"}]}])
    wf.add_node("c", "code", after=("if", "big"), error_strategy="fail-branch",
                code="def main():\n    return {}")
    wf.add_node("inner", "code", parent="it", code="def main():\n    return {}")
    wf.add_node("it", "iteration", after=("if", "false"), iterator_selector=["sys", "files"])
    w = Recorder(wf)
    nodes = by_id(w)
    assert nodes["if"]["handles"] == ["big", "false"]
    assert nodes["c"]["handles"] == ["source", "fail-branch"]
    assert nodes["it"]["container"] is True
    order = [n["id"] for n in w.nodes]
    assert order.index("it") < order.index("inner")


def test_connect_adds_the_edge_and_refuses_cycles_duplicates_and_borders():
    wf = qa()
    wf.add_node("x", "code", code="def main():\n    return {}")
    w = Recorder(wf)
    assert w.handle({"type": "connect", "source": "t", "target": "x"}) is None
    assert any(e.key == ("t", "source", "x") for e in wf.edges)
    assert {"id": "t:source->x", "source": "t", "target": "x", "source_handle": "source"} \
        in w.edges
    refusals = {
        "cycle": {"type": "connect", "source": "x", "target": "start"},
        "already connected": {"type": "connect", "source": "t", "target": "x"},
        "itself": {"type": "connect", "source": "x", "target": "x"},
        "no handle 'nope'": {"type": "connect", "source": "t", "target": "end",
                             "source_handle": "nope"},
    }
    before = list(wf.edges)
    for words, msg in refusals.items():
        reply = w.handle(msg)
        assert reply is not None and reply["type"] == "refused", msg
        assert words in reply["reason"]
    assert wf.edges == before
    assert w.can_undo is True


def test_connect_across_a_container_border_is_refused():
    wf = cellwire.Workflow("c")
    wf.add_node("start", "start")
    wf.add_node("loop", "loop", after="start", loop_count=2)
    wf.add_node("body", "code", parent="loop", code="def main():\n    return {}")
    reply = Recorder(wf).handle({"type": "connect", "source": "start", "target": "body"})
    assert reply and "same container" in reply["reason"]


def test_delete_update_add_move_and_paste():
    wf = qa()
    w = Recorder(wf)
    w.handle({"type": "delete", "nodes": [], "edges": [{"source": "t", "target": "end",
                                                        "source_handle": "source"}]})
    assert [e.key for e in wf.edges] == [("start", "source", "t")]
    w.handle({"type": "delete", "nodes": ["t"], "edges": []})
    assert "t" not in wf.nodes and wf.edges == []
    assert [n["id"] for n in w.nodes] == ["start", "end"]

    reply = w.handle({"type": "add_node", "node_type": "llm", "position": {"x": 10, "y": 20}})
    assert reply == {"type": "created", "id": "llm_1"}
    assert wf.nodes["llm_1"].type == "llm" and wf.nodes["llm_1"].position.x == 10
    w.handle({"type": "update_config", "id": "llm_1", "path": "prompt_template.0.text",
              "value": "Say {{#start.q#}}"})
    assert wf.nodes["llm_1"].config["prompt_template"] == [{"text": "Say {{#start.q#}}"}]
    w.handle({"type": "update_config", "id": "llm_1", "path": "model.name", "value": "gpt-x"})
    assert wf.nodes["llm_1"].config["model"] == {"name": "gpt-x"}
    assert by_id(w)["llm_1"]["summary"].startswith("gpt-x")
    w.handle({"type": "update_node", "id": "llm_1", "fields": {"title": "Ask"}})
    assert wf.nodes["llm_1"].title == "Ask"

    w.handle({"type": "move", "positions": {"start": {"x": 5.5, "y": -3}}})
    assert (wf.nodes["start"].position.x, wf.nodes["start"].position.y) == (5.5, -3)
    assert by_id(w)["start"]["position"] == {"x": 5.5, "y": -3}

    w.handle({"type": "paste", "nodes": [by_id(w)["start"], by_id(w)["llm_1"]],
              "edges": [{"source": "start", "target": "llm_1", "source_handle": "source"}]})
    assert {"start_1", "llm_1_1"} <= set(wf.nodes)
    assert ("start_1", "source", "llm_1_1") in [e.key for e in wf.edges]
    assert wf.nodes["start_1"].position.x == 45.5

    assert w.handle({"type": "add_node", "node_type": "nope"})["type"] == "refused"
    assert w.handle({"type": "update_config", "id": "ghost", "path": "a", "value": 1}) \
        ["reason"] == "no node 'ghost'"


def test_invalid_values_come_back_as_problems_naming_the_field():
    wf = qa()
    w = Recorder(wf)
    w.handle({"type": "update_config", "id": "t", "path": "variables.0.value_selector",
              "value": "not a list"})
    fields = {(p["node_id"], p["field"]) for p in w.problems}
    assert ("t", "variables.0.value_selector") in fields
    w.handle({"type": "update_config", "id": "t", "path": "variables.0.value_selector",
              "value": ["start", "q"]})
    assert w.problems == []


def test_undo_and_redo_restore_the_same_workflow_object():
    wf = qa()
    w = Recorder(wf)
    w.handle({"type": "delete", "nodes": ["t"]})
    w.handle({"type": "move", "positions": {"end": {"x": 1, "y": 2}}})
    w.handle({"type": "undo"})
    assert wf.nodes["end"].position is None and "t" not in wf.nodes
    w.handle({"type": "undo"})
    assert "t" in wf.nodes and len(wf.edges) == 2 and w.workflow is wf
    assert [n["id"] for n in w.nodes] == ["start", "t", "end"]
    assert (w.can_undo, w.can_redo) == (False, True)
    w.handle({"type": "redo"})
    assert "t" not in wf.nodes


def test_changes_from_python_show_after_the_cell_or_on_refresh():
    wf = qa()
    w = Recorder(wf)
    wf.add_node("extra", "code", after="end", code="def main():\n    return {}")
    assert "extra" not in by_id(w)
    widget_module._refresh_all()  # what the post_run_cell hook does after each cell
    assert "extra" in by_id(w)
    wf.remove_node("extra")
    w.refresh()
    assert "extra" not in by_id(w)


def patches(w: Recorder) -> list[dict[str, Any]]:
    """Every status patch sent, in order (a message carries those of one event-loop tick)."""
    return [p for m in w.outbox if m["type"] == "status" for p in m["patches"]]


def statuses(w: Recorder) -> dict[str, str]:
    out: dict[str, str] = {}
    for msg in w.outbox:
        if msg["type"] == "status_reset":
            out = {}
        elif msg["type"] == "status":
            for patch in msg["patches"]:
                out.update({k: v["status"] for k, v in patch.items()})
    return out


async def test_a_run_from_python_streams_status_patches_without_the_graph():
    wf = qa()
    w = Recorder(wf)
    nodes_before = w.nodes
    result = await wf.arun(q="hi", store=False)
    assert result.status == "succeeded"
    assert statuses(w) == {"start": "succeeded", "t": "succeeded", "end": "succeeded"}
    running = [p for p in patches(w) if p.get("t", {}).get("status") == "running"]
    assert len(running) == 1
    assert w.nodes is nodes_before  # no graph resend during the run
    assert w.status["end"]["outputs"] == {"out": "Q: hi"}
    assert w.status["t"]["inputs"] == {"q": "hi"}
    assert w.running is False


async def test_a_failing_node_reports_its_error_and_the_run_button_runs():
    wf = cellwire.Workflow("f")
    wf.add_node("start", "start")
    wf.add_node("c", "code", after="start", code="def main():\n    raise ValueError('boom')")
    w = Recorder(wf)
    w.handle({"type": "run"})
    assert w.run_handle is not None
    result = await w.run_handle
    assert result.status == "failed"
    assert statuses(w)["c"] == "failed"
    assert "boom" in w.status["c"]["error"]
    w.outbox.clear()
    w.handle({"type": "stop"})  # nothing running: a no-op
    assert w.handle({"type": "hello"})["status"]["c"]["status"] == "failed"


def test_show_gives_the_widget_in_a_kernel_and_the_picture_elsewhere(tmp_path, monkeypatch):
    class Kernel:
        comm_manager = object()

        def get_parent(self) -> dict:
            return {"metadata": {}}

    ip = InteractiveShell(config=Config({"HistoryManager": {"enabled": False}}))
    session = Session()
    session.workflows["qa"] = qa()
    ip.register_magics(WorkflowMagics(ip, session=session))
    assert isinstance(ip.run_line_magic("workflow", "show qa"), Picture)
    ip.kernel = Kernel()
    shown = ip.run_line_magic("workflow", "show qa")
    assert isinstance(shown, WorkflowWidget) and shown.workflow is session.workflows["qa"]
    assert isinstance(ip.run_line_magic("workflow", "show qa --svg"), Picture)


@pytest.mark.parametrize("path", ["a.0.b", "items.3"])
def test_bad_paths_are_refused(path):
    wf = qa()
    wf.nodes["t"].config["a"] = "text"
    wf.nodes["t"].config["items"] = []
    reply = Recorder(wf).handle({"type": "update_config", "id": "t", "path": path, "value": 1})
    assert reply and reply["type"] == "refused"


def fan(width: int) -> cellwire.Workflow:
    """start -> ``width`` template nodes side by side -> end."""
    wf = cellwire.Workflow("fan")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "text-input"}])
    for i in range(width):
        wf.add_node(f"t{i}", "template-transform", after="start", template=f"{i}: {{{{ q }}}}",
                    variables=[{"variable": "q", "value_selector": ["start", "q"]}])
    wf.add_node("end", "end", after=[f"t{i}" for i in range(width)], outputs=[
        {"variable": "first", "value_selector": ["t0", "output"]}])
    return wf


async def test_status_patches_of_one_tick_travel_in_one_message():
    wf = fan(12)
    w = Recorder(wf)
    await wf.arun(q="hi", store=False)
    sent = [m for m in w.outbox if m["type"] == "status"]
    # 14 nodes, each started and finished: 28 patches, in far fewer messages.
    assert len(patches(w)) == 28
    assert len(sent) < 28 / 2
    assert statuses(w) == {"start": "succeeded", "end": "succeeded",
                           **{f"t{i}": "succeeded" for i in range(12)}}
    # Order holds within and across messages: every node runs before it finishes.
    seen: dict[str, list[str]] = {}
    for p in patches(w):
        for node_id, entry in p.items():
            seen.setdefault(node_id, []).append(entry["status"])
    assert all(s == ["running", "succeeded"] for s in seen.values()), seen
    # The last patches go out before the run's end flips `running` and fills `status`.
    assert w.running is False and len(w.status) == 14


@cellwire.node_type("widget-test-step")
async def _step(ctx):
    await asyncio.sleep(0.004)
    return cellwire.NodeResult(outputs={"text": "ok"})


@pytest.mark.looptime
async def test_a_long_run_sends_status_at_most_every_interval_and_loses_nothing():
    wf = cellwire.Workflow("chain")
    wf.add_node("start", "start", variables=[])
    for i in range(40):
        wf.add_node(f"s{i}", "widget-test-step", after="start" if i == 0 else f"s{i - 1}")
    loop = asyncio.get_running_loop()
    sent_at: list[float] = []

    class Timed(Recorder):
        def send(self, content: Any, buffers: Any = None) -> None:  # type: ignore[override]
            if content.get("type") == "status":
                sent_at.append(loop.time())
            super().send(content, buffers)

    w = Timed(wf)
    await wf.arun(store=False)
    # 41 nodes one after the other (a tick each), 160 ms of virtual time: few messages...
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert len(sent_at) < 12
    assert all(g >= widget_module.STATUS_INTERVAL - 0.001 for g in gaps[:-1]), gaps
    # ...carrying every patch, in order.
    seen: dict[str, list[str]] = {}
    for p in patches(w):
        for node_id, entry in p.items():
            seen.setdefault(node_id, []).append(entry["status"])
    assert len(seen) == 41 and all(s == ["running", "succeeded"] for s in seen.values())


def test_end_nodes_have_no_output_handle_and_take_no_connection():
    wf = qa()
    wf.add_node("x", "code", code="def main():\n    return {}")
    w = Recorder(wf)
    assert by_id(w)["end"]["handles"] == []
    assert by_id(w)["t"]["handles"] == ["source"]
    reply = w.handle({"type": "connect", "source": "end", "target": "x"})
    assert reply is not None and reply["type"] == "refused" and "ends the run" in reply["reason"]
    assert not any(e.source == "end" for e in wf.edges)


class ThreadRecorder(Recorder):
    """Also notes the thread each browser message is carried out on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.threads: list[int] = []
        super().__init__(*args, **kwargs)

    def handle(self, msg: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super().handle(msg)


async def test_messages_from_a_subshell_thread_run_on_the_loop_the_widget_was_made_on():
    """JupyterLab 4.6 delivers widget messages on an ipykernel subshell thread with its own
    loop: edits and runs must still happen on the notebook's thread and loop."""
    wf = qa()
    wf.add_node("x", "code", code="def main():\n    return {}")
    loop = asyncio.get_running_loop()
    w = ThreadRecorder(wf)

    def subshell() -> None:
        async def deliver() -> None:
            w._on_custom(w, {"type": "connect", "source": "t", "target": "x"}, [])
            w._on_custom(w, {"type": "run", "inputs": {"q": "hi"}}, [])
        asyncio.run(deliver())  # a thread with a loop of its own, as a subshell has

    await asyncio.to_thread(subshell)
    for _ in range(100):
        if w.run_handle is not None:
            break
        await asyncio.sleep(0.01)
    assert w.threads == [threading.get_ident()] * 2
    assert any(e.key == ("t", "source", "x") for e in wf.edges)
    assert w.run_handle is not None and w.run_handle.task.get_loop() is loop
    result = await w.run_handle
    assert result.outputs == {"out": "Q: hi"}


async def test_run_from_a_node_reruns_it_and_what_follows_reusing_the_last_run():
    wf = qa()
    w = Recorder(wf)
    reply = w.handle({"type": "run_from", "id": "t"})  # nothing to reuse yet
    assert w.outbox[-1]["type"] == "refused" and "run the whole workflow first" in \
        w.outbox[-1]["reason"] and reply is None
    w.inputs = {"q": "hi"}
    w.handle({"type": "run"})
    assert (await w.run_handle).outputs == {"out": "Q: hi"}

    wf.nodes["t"].config["template"] = "Again: {{ q }}"
    w.outbox.clear()
    w.handle({"type": "run_from", "id": "t"})
    again = await w.run_handle
    assert again.status == "succeeded" and again.outputs == {"out": "Again: hi"}
    started = [n for p in patches(w) for n, e in p.items() if e["status"] == "running"]
    assert started == ["t", "end"]  # start is reused, not run
    # The reused node keeps showing its result: a snapshot, not a reset, opens the run.
    assert [m["type"] for m in w.outbox if m["type"].startswith("status_")] == \
        ["status_snapshot"]
    assert w.status["start"]["status"] == "succeeded"
    assert w.status["t"]["outputs"] == {"output": "Again: hi"}

    # Chained: a run from the end still finds start's and t's results.
    w.handle({"type": "run_from", "id": "end"})
    assert (await w.run_handle).outputs == {"out": "Again: hi"}


async def test_run_from_reuses_a_run_started_from_python_and_reruns_a_container():
    wf = cellwire.Workflow("it")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "text-input"}])
    wf.add_node("loop1", "iteration", after="start", iterator_selector=["sys", "files"],
                output_selector=["inner", "output"])
    wf.add_node("inner", "template-transform", parent="loop1", template="x")
    wf.add_node("end", "end", after="loop1", outputs=[
        {"variable": "q", "value_selector": ["start", "q"]}])
    w = Recorder(wf)
    first = await wf.arun(q="hi", store=False)
    assert w.last_run is not None and w.last_run.run_id == first.run_id
    w.outbox.clear()
    w.handle({"type": "run_from", "id": "inner"})
    again = await w.run_handle
    assert again.outputs == {"q": "hi"}, again.error
    started = [n for p in patches(w) for n, e in p.items() if e["status"] == "running"]
    assert started[0] == "loop1" and "start" not in started


async def test_run_node_reruns_only_that_node_on_the_last_run_s_values():
    wf = qa()
    w = Recorder(wf)
    with pytest.raises(widget_module.RunRefused, match="run the whole workflow first"):
        w.run_node("t")  # nothing to take its inputs from yet
    assert w.outbox[-1] == {"type": "refused", "reason": w.outbox[-1]["reason"],
                            "request": {"type": "run_node", "id": "t"}}
    w.inputs = {"q": "hi"}
    w.handle({"type": "run"})
    assert (await w.run_handle).outputs == {"out": "Q: hi"}

    wf.nodes["t"].config["template"] = "Again: {{ q }}"
    w.outbox.clear()
    assert w.handle({"type": "run_node", "id": "t"}) is None
    again = await w.run_handle
    assert again.status == "succeeded"
    started = [n for p in patches(w) for n, e in p.items() if e["status"] == "running"]
    assert started == ["t"]  # neither start before it nor end after it
    assert w.status["t"]["outputs"] == {"output": "Again: hi"}
    assert w.status["t"]["inputs"] == {"q": "hi"}  # start's value from the first run
    # The others keep showing the first run's results: a snapshot opens the run.
    assert [m["type"] for m in w.outbox if m["type"].startswith("status_")] == \
        ["status_snapshot"]
    assert w.status["end"]["outputs"] == {"out": "Q: hi"}
    # The editor's last run now has t's new result, and end's and start's old ones.
    w.handle({"type": "run_from", "id": "end"})
    assert (await w.run_handle).outputs == {"out": "Again: hi"}


async def test_run_node_refuses_when_the_last_run_did_not_reach_its_inputs():
    wf = cellwire.Workflow("gaps")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "number"}])
    wf.add_node("check", "if-else", after="start", cases=[{"case_id": "big", "conditions": [
        {"variable_selector": ["start", "x"], "comparison_operator": ">", "value": "5"}]}])
    wf.add_node("small", "template-transform", after=[("check", "false")], template="small")
    wf.add_node("after_small", "template-transform", after="small", template="after")
    wf.add_node("boom", "code", after=[("check", "big")],
                code="def main():\n    raise ValueError('boom')")
    wf.add_node("after_boom", "template-transform", after="boom", template="after")
    w = Recorder(wf)
    w.inputs = {"x": 7}
    w.handle({"type": "run"})
    assert (await w.run_handle).status == "failed"
    w.outbox.clear()

    w.handle({"type": "run_node", "id": "after_boom"})  # boom failed: no value to take
    assert "did not reach 'boom'" in w.outbox[-1]["reason"]
    with pytest.raises(widget_module.RunRefused, match="skipped every node before"):
        w.run_node("after_small")  # small was skipped by the branch
    with pytest.raises(widget_module.RunRefused, match="no node"):
        w.run_node("nope")
    assert w.run_handle is not None and w.run_handle.done  # nothing started

    # The failed node itself reruns: its inputs (check's) are there.
    wf.nodes["boom"].config["code"] = "def main():\n    return {'result': 1}"
    w.run_node("boom")
    assert (await w.run_handle).status == "succeeded"
    assert w.status["boom"]["status"] == "succeeded"
    assert w.status["small"]["status"] == "skipped"


async def test_run_this_node_gets_a_secret_from_the_run_state_not_the_redacted_events():
    secret = "sk-test-0123456789abcdef"
    wf = cellwire.Workflow("signed", environment=[
        EnvironmentVariable(name="API_KEY", value_type="secret")])
    wf.add_node("start", "start")
    wf.add_node("sign", "code", after="start",
                variables=[{"variable": "key", "value_selector": ["env", "API_KEY"]}],
                code="def main(key):\n    return {'token': key}")
    wf.add_node("check", "code", after="sign",
                variables=[{"variable": "token", "value_selector": ["sign", "token"]}],
                code="def main(token):\n    return {'length': len(token), 'masked': '*' in token}")
    wf.add_node("end", "end", after="check", outputs=[
        {"variable": "length", "value_selector": ["check", "length"]},
        {"variable": "masked", "value_selector": ["check", "masked"]}])
    w = Recorder(wf)
    # A run the user granted the secret to, from Python: the editor watches it.
    first = await default_runner().arun(wf, None, store=False,
                                        secrets={"API_KEY": secret})
    assert first.outputs == {"length": len(secret), "masked": False}
    assert w.last_run is first
    # What the editor was shown is redacted...
    assert secret not in repr(w.outbox) and secret not in repr(first.events)
    # ...and yet "run this node" hands the real value downstream, as the first run did.
    w.run_node("check")
    again = await w.run_handle
    assert again.status == "succeeded" and again.outputs == first.outputs
    # "Run from here" reads the secret again: the grant of the run it reruns holds.
    w.run_from("sign")
    again = await w.run_handle
    assert again.status == "succeeded" and again.outputs == first.outputs


async def test_an_editor_opened_after_a_run_shows_how_it_left_each_node_and_ended():
    wf = cellwire.Workflow("later")
    wf.add_node("start", "start")
    wf.add_node("c", "code", after="start", code="def main():\n    raise ValueError('boom')")
    result = await wf.arun(store=False)
    assert result.status == "failed"

    w = Recorder(wf)

    assert {k: v["status"] for k, v in w.status.items()} == {"start": "succeeded",
                                                               "c": "failed"}
    assert "boom" in w.status["c"]["error"]
    assert w.run_summary["status"] == "failed" and w.run_summary["run_id"] == result.run_id
    assert "boom" in w.run_summary["error"] and w.run_summary["error_node"] == "c"
    assert w.handle({"type": "hello"})["status"]["c"]["status"] == "failed"
    assert w.last_run is result
    assert Recorder(cellwire.Workflow("never-ran")).status == {}


async def test_the_status_line_follows_each_run_to_its_end():
    wf = qa()
    w = Recorder(wf)
    assert w.run_summary == {}
    w.handle({"type": "run", "inputs": {"q": "typed in the form"}})
    assert w.run_handle is not None
    result = await w.run_handle
    summary = w.run_summary
    assert summary["status"] == "succeeded" and summary["run_id"] == result.run_id
    assert summary["elapsed_ms"] == round(result.elapsed_ms, 1)
    assert summary["tokens"] == 0 and summary["error"] is None
    assert result.outputs == {"out": "Q: typed in the form"}


def test_the_palette_marks_types_that_cannot_run_in_this_install():
    types = {t["name"]: t for t in WorkflowWidget(cellwire.Workflow("p")).node_types}
    assert types["trigger-plugin"]["needs"].startswith("cannot run here: needs the trigger plugin")
    assert types["trigger-webhook"]["needs"] is None  # runs: cellwire serve gives it a URL
    assert types["knowledge-index"]["needs"]
    assert types["llm"]["needs"] is None and types["code"]["needs"] is None
