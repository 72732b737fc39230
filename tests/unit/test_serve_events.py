"""cellwire's run events as Dify's stream events: names and fields, for the events the
served-API tests do not reach over HTTP (loops, stops, pauses of chat apps)."""

from __future__ import annotations

from cellwire.engine import events as ev
from cellwire.model import Workflow
from cellwire.serve.events import DifyStream

WF = Workflow("w", nodes={
    "start": {"id": "start", "type": "start"},
    "again": {"id": "again", "type": "loop", "title": "Again"},
    "inner": {"id": "inner", "type": "code", "parent": "again"},
})


def stream(mode: str = "workflow") -> DifyStream:
    return DifyStream("r1", WF, mode=mode, user="u", conversation_id="c1")


def test_loop_events_carry_the_loop_and_its_rounds():
    s = stream()
    s.convert(ev.RunStarted(run_id="r1", time=100.0, workflow="w", inputs={}))
    base = {"run_id": "r1", "node_id": "again", "node_type": "loop", "execution_id": "x1"}
    started = s.convert(ev.ContainerStarted(time=101.0, kind="loop", total=None, **base))
    following = s.convert(ev.ContainerNext(time=102.0, kind="loop", index=1, **base))
    inner = s.convert(ev.NodeStarted(run_id="r1", time=102.5, node_id="inner",
                                     node_type="code", execution_id="x2", parent_id="again",
                                     round=1, title="inner", index=2))
    done = s.convert(ev.ContainerCompleted(time=103.0, kind="loop", rounds=2, **base))
    assert [e["event"] for e in started + following + inner + done] == [
        "loop_started", "loop_next", "node_started", "loop_completed"]
    assert started[0]["data"]["title"] == "Again"
    assert following[0]["data"]["index"] == 1
    assert inner[0]["data"]["loop_id"] == "again" and inner[0]["data"]["iteration_id"] is None
    assert done[0]["data"]["steps"] == 2


def test_a_stopped_run_finishes_stopped_with_its_reason():
    s = stream()
    s.convert(ev.RunStarted(run_id="r1", time=100.0, workflow="w", inputs={}))
    (finished,) = s.convert(ev.RunStopped(run_id="r1", time=101.5, reason="stopped by you"))
    assert finished["event"] == "workflow_finished"
    assert finished["data"]["status"] == "stopped"
    assert finished["data"]["error"] == "stopped by you"
    assert finished["data"]["elapsed_time"] == 1.5


def test_chat_events_name_the_conversation_and_message():
    s = stream("advanced-chat")
    (started,) = s.convert(ev.RunStarted(run_id="r1", time=100.0, workflow="w", inputs={}))
    assert started["conversation_id"] == "c1" and started["message_id"] == "r1"
    (chunk,) = s.convert(ev.StreamChunk(run_id="r1", time=100.1, node_id="a",
                                        node_type="answer", execution_id="x",
                                        selector=("a", "answer"), text="hi"))
    assert chunk["event"] == "message" and chunk["answer"] == "hi" and chunk["id"] == "r1"
    paused = s.convert(ev.RunPaused(run_id="r1", time=101.0, forms=[{
        "run_id": "r1", "node_id": "ask", "title": "Ask", "token": "t0k", "content": "ok?",
        "fields": [], "actions": [{"id": "yes", "title": "Yes"}], "expires_at": None}]))
    assert [e["event"] for e in paused] == ["human_input_required", "workflow_paused"]
    assert paused[0]["data"]["form_token"] == "t0k"
    assert paused[1]["data"]["reasons"] == [{"type": "human_input_required", "form_id": "t0k",
                                            "node_id": "ask"}]
