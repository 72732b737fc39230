"""Triggers inside the served API: a webhook request starts a stored run through the server's
runs (``X-Run-Id`` names it), and of several worker processes on one store only one runs
the schedules."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from serve_support import serving

from cellwire.serve.app import _one_scheduler

HOOK = {
    "kind": "app", "version": "0.4.0", "app": {"mode": "workflow", "name": "hook"},
    "workflow": {"graph": {
        "nodes": [
            {"id": "trigger", "type": "custom", "data": {
                "title": "Trigger", "type": "trigger-webhook", "method": "post",
                "content_type": "application/json",
                "body": [{"name": "payload", "type": "object", "required": True}],
                "status_code": 202, "response_body": '{"ok": true}'}},
            {"id": "end", "type": "custom", "data": {
                "title": "End", "type": "end",
                "outputs": [{"variable": "payload", "value_selector": ["trigger", "payload"]}]}},
        ],
        "edges": [{"id": "e", "source": "trigger", "sourceHandle": "source",
                   "target": "end", "targetHandle": "target"}],
    }},
}


def test_a_webhook_starts_a_stored_run_of_its_app(tmp_path: Path):
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "hook.yml").write_text(yaml.safe_dump(HOOK))
    with serving(apps, tmp_path / "runs.db") as served:
        key = served.new_key("runner", app="hook")
        with served.client(key=key) as c:
            answer = c.post(f"{served.url}/triggers/webhook/hook",
                            json={"payload": {"issue": 7}})
            assert answer.status_code == 202 and answer.json() == {"ok": True}
            run_id = answer.headers["X-Run-Id"]
            deadline = time.monotonic() + 30
            while (detail := c.get(f"/workflows/run/{run_id}").json())["status"] == "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert detail["status"] == "succeeded"
            assert detail["outputs"] == {"payload": {"issue": 7}}
            refused = c.post(f"{served.url}/triggers/webhook/hook", json={})
            assert refused.status_code == 400
        with served.client(key=served.new_key("viewer", app="hook")) as viewer:
            assert viewer.post(f"{served.url}/triggers/webhook/hook",
                               json={"payload": {}}).status_code == 403


def test_one_process_of_a_server_runs_the_schedules(tmp_path: Path):
    db = tmp_path / "runs.db"
    with _one_scheduler(db) as first, _one_scheduler(db) as second:
        assert (first, second) == (True, False)
    with _one_scheduler(db) as again:
        assert again is True
