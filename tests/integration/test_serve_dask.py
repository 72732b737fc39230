"""``cellwire serve --dask``: runs execute on a real Dask LocalCluster on 127.0.0.1 (in-process
workers), their events stream back, stop reaches the worker, and every run is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import distributed
import pytest
from serve_support import Served, names, serving, sse, write_apps


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with distributed.LocalCluster(n_workers=1, threads_per_worker=4, processes=False,
                                  dashboard_address=None, scheduler_port=0,
                                  protocol="tcp", host="127.0.0.1") as found:
        yield found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           cluster: distributed.LocalCluster) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("dask")
    with serving(write_apps(folder / "apps", ("greet", "notes", "slow", "review")), folder / "runs.db",
                 dask=cluster.scheduler_address) as found:
        yield found


def test_a_run_on_the_cluster_streams_and_is_stored(served: Served,
                                                   cluster: distributed.LocalCluster):
    with served.client("greet") as c:
        events = sse(c.post("/workflows/run", json={"inputs": {"name": "Ada"},
                                                    "response_mode": "streaming",
                                                    "user": "u"}))
        assert names(events) == ["workflow_started"] + ["node_started", "node_finished"] * 3 \
            + ["workflow_finished"]
        assert events[-1]["data"]["outputs"] == {"greeting": "Hello Ada"}
        blocking = c.post("/workflows/run", json={"inputs": {"name": "Bo"},
                                                  "response_mode": "blocking", "user": "u"})
        data = blocking.json()["data"]
        assert data["status"] == "succeeded" and data["outputs"] == {"greeting": "Hello Bo"}
        served.store.flush(10)
        assert c.get(f"/workflows/run/{data['id']}").json()["status"] == "succeeded"
    with served.client("notes") as c:
        reply = c.post("/chat-messages", json={"query": "hi", "inputs": {}, "user": "u",
                                               "response_mode": "blocking"}).json()
        assert reply["answer"] == "turn 1: hi"
    # They ran as the cluster's tasks (one per run), not in the server.
    runs = cluster.scheduler.task_prefixes["cellwire-run"]
    assert sum(runs.state_counts.values()) >= 3


def test_stop_reaches_the_run_on_its_worker(served: Served):
    with served.client("slow") as c, c.stream("POST", "/workflows/run", json={
            "inputs": {}, "response_mode": "streaming", "user": "u"}) as response:
        events = []
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            events.append(json.loads(line[5:]))
            if events[-1]["event"] == "node_started" and events[-1]["data"]["node_id"] == "wait":
                run_id = events[0]["workflow_run_id"]
                assert c.post(f"/workflows/tasks/{run_id}/stop",
                              json={"user": "u"}).json() == {"result": "success"}
    assert events[-1]["event"] == "workflow_finished"
    assert events[-1]["data"]["status"] == "stopped"
    served.store.flush(10)
    assert str(served.store.run(run_id)["status"]) == "stopped"


def test_a_run_paused_on_a_worker_resumes_when_its_form_is_answered(served: Served):
    with served.client("review") as c:
        events = sse(c.post("/workflows/run", json={"inputs": {"topic": "x"},
                                                    "response_mode": "streaming", "user": "u"}))
        assert names(events)[-2:] == ["human_input_required", "workflow_paused"]
        token, run_id = events[-2]["data"]["form_token"], events[0]["workflow_run_id"]
        assert c.post(f"/form/human_input/{token}",
                      json={"action": "approve", "inputs": {"note": "ok"}}).status_code == 200
        resumed = sse(c.get(f"/workflow/{run_id}/events", params={"continue_on_pause": True}))
    assert resumed[-1]["event"] == "workflow_finished"
    assert resumed[-1]["data"]["outputs"] == {"action": "approve", "note": "ok"}
