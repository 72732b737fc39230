"""The Service API over real HTTP (uvicorn on 127.0.0.1, httpx), following Dify's API
reference: every endpoint, blocking and streaming, stop, reconnect, human input and the error
cases, answered in Dify's shape. Auth is the guard's business (test_serve_auth_routes.py);
these tests use an admin key, and check the routes refuse callers through the guard."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_support import Served, names, serving, sse, write_apps

from cellwire.serve.routes import common
from cellwire.services.sandbox import sandbox_unavailable
from cellwire.store import RunStore


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("serve")
    with serving(write_apps(folder / "apps"), folder / "runs.db") as found:
        yield found


@pytest.fixture
def base(server: Served) -> Served:
    return server


@pytest.fixture
def store(server: Served) -> RunStore:
    return server.store


def client(base: Served, app: str) -> httpx.Client:
    return base.client(app)


def run(c: httpx.Client, inputs: dict[str, Any], mode: str = "blocking",
        **extra: Any) -> httpx.Response:
    return c.post("/workflows/run", json={"inputs": inputs, "response_mode": mode,
                                          "user": "u1", **extra})


def dify_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "status"}
    assert body["code"] == code and body["status"] == status
    return str(body["message"])


def stored_status(store: RunStore, run_id: str) -> str:
    store.flush(10)
    return str(store.run(run_id)["status"])


# -- workflow runs ------------------------------------------------------------------------


def test_a_blocking_run_answers_the_finished_run_and_is_stored(base: Served, store: RunStore):
    with client(base, "greet") as c:
        answer = run(c, {"name": "Ada", "tone": "loud"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["task_id"] == body["workflow_run_id"]
        data = body["data"]
        assert set(data) == {"id", "workflow_id", "status", "outputs", "error", "elapsed_time",
                             "total_tokens", "total_steps", "created_at", "finished_at"}
        assert data["status"] == "succeeded" and data["outputs"] == {"greeting": "Hello Ada!"}
        assert data["total_steps"] == 3 and data["error"] is None
        detail = c.get(f"/workflows/run/{data['id']}").json()
    assert detail["status"] == "succeeded" and detail["outputs"] == {"greeting": "Hello Ada!"}
    assert detail["inputs"]["name"] == "Ada" and detail["total_steps"] == 3
    assert detail["finished_at"] >= detail["created_at"]
    assert stored_status(store, data["id"]) == "succeeded"


def test_a_streaming_run_sends_difys_events_with_difys_fields(base: Served):
    with client(base, "greet") as c:
        answer = run(c, {"name": "Ada"}, "streaming")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = sse(answer)
    assert names(events) == ["workflow_started"] + ["node_started", "node_finished"] * 3 + [
        "workflow_finished"]
    run_id = events[0]["workflow_run_id"]
    assert all(e["task_id"] == run_id and e["workflow_run_id"] == run_id for e in events)
    started = events[0]["data"]
    assert started["id"] == run_id and started["inputs"]["name"] == "Ada"
    assert {"id", "node_id", "node_type", "title", "index", "predecessor_node_id",
            "created_at", "iteration_id", "loop_id"} <= set(events[3]["data"])
    assert events[3]["data"]["node_id"] == "say"
    node = events[4]["data"]
    assert node["id"] == events[3]["data"]["id"]
    assert node["node_id"] == "say" and node["node_type"] == "template-transform"
    assert node["status"] == "succeeded" and node["outputs"] == {"output": "Hello Ada"}
    assert {"inputs", "process_data", "elapsed_time", "execution_metadata", "finished_at",
            "error"} <= set(node)
    finished = events[-1]["data"]
    assert finished["status"] == "succeeded" and finished["outputs"] == {"greeting": "Hello Ada"}
    assert finished["total_steps"] == 3 and finished["exceptions_count"] == 0


@pytest.mark.parametrize(("inputs", "field", "says"), [
    ({}, "name", "is required"),
    ({"name": 3}, "name", "must be a string"),
    ({"name": "x" * 21}, "name", "less than 20 characters"),
    ({"name": "Ada", "tone": "shouty"}, "tone", "must be one of the following"),
    ({"name": "Ada", "times": "many"}, "times", "must be a valid number"),
    ({"name": "Ada", "doc": "/etc/passwd"}, "doc", "no local paths"),
    ({"name": "Ada", "doc": {"transfer_method": "local_file",
                             "upload_file_id": "0" * 8}}, "doc", "names no uploaded file"),
    ({"name": "Ada", "extra": {"path": "/etc/passwd"}}, "extra", "local file"),
])
def test_inputs_are_checked_against_the_start_node(base: Served, inputs: dict[str, Any],
                                                     field: str, says: str):
    with client(base, "greet") as c:
        message = dify_error(run(c, inputs), 400, "invalid_param")
    assert message.startswith(field) and says in message


@pytest.mark.parametrize("body", [
    {"inputs": {"name": "Ada"}, "response_mode": "blocking"},  # no user
    {"inputs": {"name": "Ada"}, "response_mode": "sometimes", "user": "u"},
    {"response_mode": "blocking", "user": "u"},  # no inputs
    {"inputs": "Ada", "response_mode": "blocking", "user": "u"},
])
def test_a_malformed_body_is_400_invalid_param_naming_the_field(base: Served, body: dict):
    with client(base, "greet") as c:
        message = dify_error(c.post("/workflows/run", json=body), 400, "invalid_param")
    assert any(key in message for key in ("user", "response_mode", "inputs"))


def test_a_body_that_is_not_json_is_400(base: Served):
    with client(base, "greet") as c:
        answer = c.post("/workflows/run", content=b"{not json",
                        headers={"content-type": "application/json"})
    dify_error(answer, 400, "invalid_param")


def test_the_app_is_named_by_header_or_parameter_else_400_naming_the_choices(base: Served):
    with base.client() as c:
        message = dify_error(c.get("/info"), 400, "app_required")
        assert all(app in message for app in ("greet", "notes", "review"))
        assert c.get("/info", params={"app": "notes"}).json()["mode"] == "advanced-chat"
        dify_error(c.get("/info", headers={"X-Cellwire-App": "nope"}), 404, "app_not_found")


def test_a_route_for_the_other_mode_is_refused_as_dify_does(base: Served):
    with client(base, "notes") as c:
        dify_error(run(c, {}), 400, "not_workflow_app")
    with client(base, "greet") as c:
        answer = c.post("/chat-messages", json={"query": "hi", "inputs": {}, "user": "u"})
        dify_error(answer, 400, "not_chat_app")
        dify_error(c.get("/conversations", params={"user": "u"}), 400, "not_chat_app")


def test_an_unknown_run_or_route_is_404_in_difys_shape(base: Served):
    with client(base, "greet") as c:
        dify_error(c.get("/workflows/run/no-such-run"), 404, "not_found")
        dify_error(c.get("/workflow/no-such-run/events"), 404, "not_found")
        dify_error(c.post("/workflows/tasks/no-such-task/stop", json={"user": "u"}), 404,
                   "not_found")
        dify_error(c.get("/no/such/route"), 404, "not_found")
        dify_error(c.delete("/workflows/run"), 405, "method_not_allowed")


def test_a_run_of_another_app_is_not_found_through_this_one(base: Served):
    with client(base, "greet") as c:
        run_id = run(c, {"name": "Ada"}).json()["workflow_run_id"]
    with client(base, "review") as c:
        dify_error(c.get(f"/workflows/run/{run_id}"), 404, "not_found")


# -- stop and reconnect ------------------------------------------------------------------


def first_events(c: httpx.Client, url: str, count: int, **kwargs: Any) -> list[dict]:
    """The first ``count`` events of a stream; then the client leaves."""
    found: list[dict] = []
    with c.stream(kwargs.pop("method", "POST"), url, **kwargs) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                found.append(json.loads(line[5:]))
                if len(found) == count:
                    break
    return found


def test_a_run_outlives_its_client_which_reconnects_and_stops_it(base: Served, store: RunStore):
    with client(base, "slow") as c:
        started = first_events(c, "/workflows/run", 2, json={
            "inputs": {}, "response_mode": "streaming", "user": "u1"})
        run_id = started[0]["workflow_run_id"]
        assert names(started) == ["workflow_started", "node_started"]
        # The client left; the run goes on, and a new client sees it from its start.
        again = first_events(c, f"/workflow/{run_id}/events", 2, method="GET")
        assert again == started
        assert c.get(f"/workflows/run/{run_id}").json()["status"] == "running"
        with c.stream("GET", f"/workflow/{run_id}/events") as live:
            stop = c.post(f"/workflows/tasks/{run_id}/stop", json={"user": "u1"})
            assert stop.status_code == 200 and stop.json() == {"result": "success"}
            events = [json.loads(line[5:]) for line in live.iter_lines()
                      if line.startswith("data:")]
    assert events[-1]["event"] == "workflow_finished"
    assert events[-1]["data"]["status"] == "stopped"
    assert stored_status(store, run_id) == "stopped"
    # Stopping a task that ended is a success with nothing to do, as in Dify.
    with client(base, "slow") as c:
        assert c.post(f"/workflows/tasks/{run_id}/stop", json={"user": "u1"}).json() == {
            "result": "success"}


def test_a_stream_pings_while_nothing_happens(base: Served, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(common, "PING_SECONDS", 0.2)
    pings = 0
    with client(base, "slow") as c, c.stream("POST", "/workflows/run", json={
            "inputs": {}, "response_mode": "streaming", "user": "u1"}) as response:
        run_id = None
        for line in response.iter_lines():
            if line.startswith("data:") and run_id is None:
                run_id = json.loads(line[5:])["workflow_run_id"]
            if line == "event: ping":
                pings += 1
                if pings == 2:
                    break
        assert run_id is not None
        c.post(f"/workflows/tasks/{run_id}/stop", json={"user": "u1"})
    assert pings == 2


# -- human input --------------------------------------------------------------------------


def test_a_run_pausing_for_input_resumes_when_its_form_is_answered(base: Served,
                                                                   store: RunStore):
    with client(base, "review") as c:
        dify_error(run(c, {"topic": "cats"}), 400, "invalid_param")  # blocking cannot wait
        events = sse(run(c, {"topic": "cats"}, "streaming"))
        assert names(events)[-2:] == ["human_input_required", "workflow_paused"]
        form = events[-2]["data"]
        paused = events[-1]["data"]
        run_id = events[0]["workflow_run_id"]
        assert paused["paused_nodes"] == ["ask"] and paused["status"] == "paused"
        assert form["node_id"] == "ask" and form["node_title"] == "Review"
        assert [a["id"] for a in form["actions"]] == ["approve", "reject"]
        assert form["inputs"][0]["output_variable_name"] == "note"
        assert "Publish cats?" in form["form_content"]
        token = form["form_token"]
        assert stored_status(store, run_id) == "paused"

    with httpx.Client(base_url=base.url, timeout=30) as anyone:  # the token is the credential
        shown = anyone.get(f"/form/human_input/{token}")
        assert shown.status_code == 200
        assert [a["id"] for a in shown.json()["user_actions"]] == ["approve", "reject"]
        dify_error(anyone.post(f"/form/human_input/{token}",
                               json={"action": "maybe", "inputs": {}, "user": "u1"}),
                   400, "invalid_param")
        answered = anyone.post(f"/form/human_input/{token}", json={
            "action": "approve", "inputs": {"note": "fine"}, "user": "u1"})
        assert answered.status_code == 200 and answered.json() == {}
        dify_error(anyone.post(f"/form/human_input/{token}",
                               json={"action": "approve", "inputs": {}, "user": "u1"}),
                   412, "human_input_form_submitted")
        dify_error(anyone.get(f"/form/human_input/{token}"), 412, "human_input_form_submitted")
        dify_error(anyone.get("/form/human_input/not-a-token"), 404, "not_found")

    with client(base, "review") as c:
        resumed = sse(c.get(f"/workflow/{run_id}/events", params={"continue_on_pause": True}))
    assert names(resumed)[-1] == "workflow_finished"
    assert "workflow_paused" in names(resumed)
    assert resumed[-1]["data"]["status"] == "succeeded"
    assert resumed[-1]["data"]["outputs"] == {"action": "approve", "note": "fine"}
    assert stored_status(store, run_id) == "succeeded"


# -- logs -----------------------------------------------------------------------------


def test_logs_list_the_apps_runs_a_page_at_a_time(base: Served):
    with client(base, "greet") as c:
        for name in ("L1", "L2", "L3"):
            run(c, {"name": name}, user="log-user")
        page = c.get("/workflows/logs", params={"limit": 2,
                                                "created_by_end_user_session_id": "log-user"})
        assert page.status_code == 200
        body = page.json()
        assert body["total"] == 3 and body["has_more"] is True and len(body["data"]) == 2
        item = body["data"][0]
        assert item["workflow_run"]["status"] == "succeeded"
        assert item["created_by_end_user"]["session_id"] == "log-user"
        second = c.get("/workflows/logs", params={
            "limit": 2, "page": 2, "created_by_end_user_session_id": "log-user"}).json()
        assert len(second["data"]) == 1 and second["has_more"] is False
        assert c.get("/workflows/logs", params={"keyword": "L2", "created_by_end_user_session_id":
                                                "log-user"}).json()["total"] == 1
        assert c.get("/workflows/logs", params={"status": "failed"}).json()["total"] == 0
        dify_error(c.get("/workflows/logs", params={"limit": 1000}), 400, "invalid_param")


# -- files, info, parameters, meta --------------------------------------------------------


def test_an_uploaded_file_is_an_input_of_a_run(base: Served):
    with client(base, "greet") as c:
        up = c.post("/files/upload", files={"file": ("notes.txt", b"hello", "text/plain")},
                    data={"user": "u1"})
        assert up.status_code == 201, up.text
        record = up.json()
        assert record["name"] == "notes.txt" and record["size"] == 5
        assert record["extension"] == "txt" and record["mime_type"] == "text/plain"
        answer = run(c, {"name": "Ada", "doc": {"type": "document", "transfer_method":
                                                "local_file", "upload_file_id": record["id"]}})
        assert answer.json()["data"]["status"] == "succeeded"
        detail = c.get(f"/workflows/run/{answer.json()['workflow_run_id']}").json()
        assert detail["inputs"]["doc"]["filename"] == "notes.txt"
        dify_error(c.post("/files/upload", data={"user": "u1"}), 400, "no_file_uploaded")


def test_info_parameters_and_meta_describe_the_app(base: Served):
    with client(base, "greet") as c:
        info = c.get("/info").json()
        assert info["name"] == "greet" and info["mode"] == "workflow"
        form = c.get("/parameters", params={"user": "u"}).json()["user_input_form"]
        assert form[0] == {"text-input": {"variable": "name", "label": "name",
                                          "required": True, "default": "",
                                          "max_length": 20}}
        assert form[1]["select"]["options"] == ["plain", "loud"]
        assert c.get("/meta").json() == {"tool_icons": {}}


# -- chat ---------------------------------------------------------------------------------


def chat(c: httpx.Client, query: str, mode: str = "blocking", **extra: Any) -> httpx.Response:
    return c.post("/chat-messages", json={"query": query, "inputs": {}, "response_mode": mode,
                                          "user": "chat-user", **extra})


def test_a_conversation_keeps_its_variables_across_turns(base: Served, store: RunStore):
    with client(base, "notes") as c:
        first = chat(c, "hello")
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["event"] == "message" and body["mode"] == "advanced-chat"
        assert body["answer"] == "turn 1: hello" and body["id"] == body["message_id"]
        assert "usage" in body["metadata"]
        conversation = body["conversation_id"]
        events = sse(chat(c, "again", "streaming", conversation_id=conversation))
        assert names(events)[0] == "workflow_started"
        assert names(events)[-2:] == ["workflow_finished", "message_end"]
        chunks = [e for e in events if e["event"] == "message"]
        assert "".join(e["answer"] for e in chunks) == "turn 2: again"
        assert all(e["conversation_id"] == conversation for e in events)
        assert stored_status(store, events[0]["workflow_run_id"]) == "succeeded"

        listed = c.get("/conversations", params={"user": "chat-user"}).json()
        assert conversation in [item["id"] for item in listed["data"]]
        messages = c.get("/messages", params={"user": "chat-user",
                                              "conversation_id": conversation}).json()
        assert [m["query"] for m in messages["data"]] == ["hello", "again"]
        assert [m["answer"] for m in messages["data"]] == ["turn 1: hello", "turn 2: again"]
        older = c.get("/messages", params={"user": "chat-user", "conversation_id": conversation,
                                           "first_id": messages["data"][1]["id"]}).json()
        assert [m["query"] for m in older["data"]] == ["hello"]
        variables = c.get(f"/conversations/{conversation}/variables",
                          params={"user": "chat-user"}).json()["data"]
        assert [(v["name"], v["value"]) for v in variables] == [("turns", 2)]

        renamed = c.post(f"/conversations/{conversation}/name",
                         json={"name": "greetings", "user": "chat-user"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "greetings"
        assert c.get("/conversations", params={"user": "chat-user"}).json()["data"][0][
            "name"] == "greetings"
        gone = c.request("DELETE", f"/conversations/{conversation}", json={"user": "chat-user"})
        assert gone.status_code == 204
        assert conversation not in [item["id"] for item in c.get(
            "/conversations", params={"user": "chat-user"}).json()["data"]]
        dify_error(chat(c, "more", conversation_id=conversation), 404, "not_found")
        dify_error(c.get("/messages", params={"user": "u", "conversation_id": conversation}),
                   404, "not_found")


def test_a_chat_turn_can_be_stopped(base: Served):
    with client(base, "notes") as c:
        answer = c.post("/chat-messages/no-such-task/stop", json={"user": "u"})
        dify_error(answer, 404, "not_found")
        run_id = chat(c, "hi").json()["task_id"]
        assert c.post(f"/chat-messages/{run_id}/stop", json={"user": "u"}).json() == {
            "result": "success"}


def test_messages_need_a_conversation(base: Served):
    with client(base, "notes") as c:
        dify_error(c.get("/messages", params={"user": "u"}), 400, "invalid_param")
        dify_error(chat(c, "hi", conversation_id="no-such-conversation"), 404, "not_found")


# -- the network policy of served runs ------------------------------------------------


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_site() -> Iterator[str]:
    site = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}/"
    site.shutdown()


@pytest.mark.parametrize("allow", [False, True])
def test_served_http_requests_reach_loopback_only_when_allowed(tmp_path: Path,
                                                               loopback_site: str,
                                                               allow: bool):
    apps = write_apps(tmp_path / "apps", ("fetch",))
    with serving(apps, tmp_path / "runs.db", allow_private_network=allow) as served, \
            served.client() as c:
        data = run(c, {"url": loopback_site}).json()["data"]
    if allow:
        assert data["status"] == "succeeded" and data["outputs"] == {"status": 200}
    else:
        assert data["status"] == "failed"
        assert "loopback" in data["error"]


def test_a_run_started_just_now_is_found_before_it_is_stored(base: Served):
    with client(base, "slow") as c:
        started = first_events(c, "/workflows/run", 1, json={
            "inputs": {}, "response_mode": "streaming", "user": "u1"})
        run_id = started[0]["workflow_run_id"]
        deadline = time.monotonic() + 10
        while c.get(f"/workflows/run/{run_id}").json()["status"] != "running":
            assert time.monotonic() < deadline
        c.post(f"/workflows/tasks/{run_id}/stop", json={"user": "u1"})


# -- the guard, through these routes --------------------------------------------------


def test_no_key_or_a_wrong_key_is_401(base: Served):
    with httpx.Client(base_url=base.url, timeout=30) as c:
        dify_error(c.get("/info", params={"app": "greet"}), 401, "unauthorized")
        dify_error(c.post("/workflows/run", params={"app": "greet"}, json={
            "inputs": {"name": "Ada"}, "response_mode": "blocking", "user": "u"}),
            401, "unauthorized")
        # An unknown caller learns nothing about which apps are served.
        dify_error(c.get("/info", params={"app": "nope"}), 401, "unauthorized")
    with base.client("greet", key="app-not-a-key") as c:
        dify_error(c.get("/parameters"), 401, "unauthorized")


def test_a_viewer_reads_but_may_not_run_stop_or_upload(base: Served):
    viewer = base.new_key("viewer")
    with base.client("greet") as admin:
        run_id = run(admin, {"name": "Ada"}).json()["workflow_run_id"]
    with base.client("greet", key=viewer) as c:
        assert c.get(f"/workflows/run/{run_id}").status_code == 200
        assert c.get("/workflows/logs").status_code == 200
        dify_error(run(c, {"name": "Ada"}), 403, "forbidden")
        dify_error(c.post(f"/workflows/tasks/{run_id}/stop", json={"user": "u"}), 403,
                   "forbidden")
        dify_error(c.post("/files/upload", files={"file": ("a.txt", b"a")}), 403, "forbidden")
    with base.client("notes", key=viewer) as c:
        dify_error(c.post("/chat-messages", json={"query": "hi", "inputs": {}, "user": "u"}),
                   403, "forbidden")


def test_a_key_bound_to_an_app_uses_it_without_naming_it_and_no_other(base: Served):
    bound = base.new_key("runner", app="greet")
    with base.client(key=bound) as c:
        answer = run(c, {"name": "Ada"})  # no header: the key's app
        assert answer.status_code == 200 and answer.json()["data"]["status"] == "succeeded"
        assert c.get("/info").json()["name"] == "greet"
        dify_error(c.get("/info", params={"app": "notes"}), 403, "forbidden")
        dify_error(c.get("/workflows/logs", headers={"X-Cellwire-App": "review"}), 403,
                   "forbidden")


def test_iterations_and_streamed_text_have_their_dify_events(tmp_path: Path):
    apps = write_apps(tmp_path / "apps", ("each",))
    with serving(apps, tmp_path / "runs.db") as served, served.client() as c:
        events = sse(run(c, {"xs": {"items": ["a", "b"]}}, "streaming"))
    kinds = names(events)
    assert kinds.count("iteration_started") == 1 and kinds.count("iteration_completed") == 1
    assert kinds.count("iteration_next") >= 1
    inner = [e["data"] for e in events if e["event"] == "node_finished"
             and e["data"]["node_id"] == "twice"]
    assert len(inner) == 2 and all(d["iteration_id"] == "each" for d in inner)
    chunks = [e["data"] for e in events if e["event"] == "text_chunk"]
    assert chunks and "".join(c["text"] for c in chunks) == events[-1]["data"]["outputs"]["said"]
    assert chunks[0]["from_variable_selector"][0] == "say"
    assert events[-1]["data"]["outputs"]["out"] == ["aa", "bb"]


@pytest.mark.skipif(sandbox_unavailable() is not None,
                    reason=f"no sandbox here: {sandbox_unavailable()}")
@pytest.mark.parametrize("trust", [False, True])
def test_code_from_served_files_runs_sandboxed_unless_trusted(tmp_path: Path, trust: bool):
    apps = write_apps(tmp_path / "apps", ("where",))
    with serving(apps, tmp_path / "runs.db", trust=trust) as served, served.client() as c:
        data = run(c, {}).json()["data"]
    assert data["status"] == "succeeded", data["error"]
    # In the server's own process only when trusted; else in a sandboxed process of its own.
    assert (data["outputs"]["pid"] == os.getpid()) is trust


def test_retries_and_failures_stream_as_dify_reports_them(tmp_path: Path):
    apps = write_apps(tmp_path / "apps", ("flaky",))
    with serving(apps, tmp_path / "runs.db") as served, served.client() as c:
        events = sse(run(c, {"mark": str(tmp_path / "mark")}, "streaming"))
        blocking = run(c, {"mark": str(tmp_path / "mark")}).json()["data"]
    retry = [e["data"] for e in events if e["event"] == "node_retry"]
    assert len(retry) == 1 and retry[0]["node_id"] == "once"
    assert retry[0]["status"] == "retry" and "first try fails" in retry[0]["error"]
    failed = next(e["data"] for e in events if e["event"] == "node_finished"
              and e["data"]["node_id"] == "boom")
    assert failed["status"] == "failed" and "always fails" in failed["error"]
    finished = events[-1]
    assert finished["event"] == "workflow_finished"
    assert finished["data"]["status"] == "failed" and "always fails" in finished["data"]["error"]
    # A failed run is a 200 with its status, as in Dify; never a success.
    assert blocking["status"] == "failed" and "always fails" in blocking["error"]


def test_a_failed_chat_turn_ends_with_an_error_event_or_a_400(tmp_path: Path):
    apps = write_apps(tmp_path / "apps", ("grumpy",))
    with serving(apps, tmp_path / "runs.db") as served, served.client() as c:
        events = sse(chat(c, "why", "streaming"))
        message = dify_error(chat(c, "why"), 400, "completion_request_error")
    assert names(events)[-2:] == ["workflow_finished", "error"]
    assert events[-2]["data"]["status"] == "failed"
    assert events[-1]["code"] == "completion_request_error" and events[-1]["status"] == 400
    assert "no answer to why" in events[-1]["message"] and "no answer to why" in message
