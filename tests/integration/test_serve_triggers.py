"""Triggers of served apps: Dify DSLs with trigger-webhook / trigger-schedule nodes import and
run; the webhook endpoint on a real uvicorn server maps requests into runs' inputs as Dify does;
the scheduler fires on the node's cron schedule in its time zone (on a test-double clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from asgi_server import running
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cellwire.api import run as run_workflow
from cellwire.formats.dify import load_dify
from cellwire.model import Workflow, WorkflowError
from cellwire.nodes.triggers import ScheduleConfig, schedule_cron
from cellwire.serve.auth import KeyGuard
from cellwire.serve.errors import ServeError
from cellwire.serve.triggers import Schedule, Scheduler, schedules_of, webhook_router
from cellwire.store import RunStore
from cellwire.store.keys import create_key


@dataclass(frozen=True)
class App:
    """A served app as the server keeps it (``serve.apps.ServedApp`` has these fields)."""

    name: str
    workflow: Workflow


def dsl(name: str, trigger: dict[str, Any], outputs: list[str]) -> Workflow:
    """A Dify DSL document: the trigger, then an end node exposing the trigger's outputs."""
    document = {
        "kind": "app", "version": "0.4.0",
        "app": {"mode": "workflow", "name": name},
        "workflow": {"graph": {
            "nodes": [
                {"id": "trigger", "type": "custom", "data": {"title": "Trigger", **trigger}},
                {"id": "end", "type": "custom", "data": {
                    "title": "End", "type": "end",
                    "outputs": [{"variable": o, "value_selector": ["trigger", o]}
                                for o in outputs]}},
            ],
            "edges": [{"id": "e", "source": "trigger", "sourceHandle": "source",
                       "target": "end", "targetHandle": "target"}],
        }},
    }
    return load_dify(yaml.safe_dump(document))


WEBHOOK = {
    "type": "trigger-webhook", "method": "post", "content_type": "application/json",
    "headers": [{"name": "X-Event-Id", "type": "string", "required": True}],
    "params": [{"name": "page", "type": "number", "required": False}],
    "body": [{"name": "payload", "type": "object", "required": True},
             {"name": "count", "type": "number"}],
    "status_code": 202, "response_body": '{"ok": true}',
}


class StartRunDouble:
    """Test double of the server's ``start_run``: records each call, answers a run id."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, app: str, inputs: dict[str, Any]) -> str:
        self.calls.append((app, inputs))
        return f"run-{len(self.calls)}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def serve(apps: dict[str, App], start: StartRunDouble, store: RunStore, **options: Any) -> Any:
    app = FastAPI()
    app.state.guard = KeyGuard(store)

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    app.include_router(webhook_router(apps, start, **options))
    return app


def test_a_webhook_request_becomes_a_run_with_difys_inputs(store: RunStore) -> None:
    workflow = dsl("hook", WEBHOOK, ["X_Event_Id", "page", "payload", "count"])
    apps = {"hook": App("hook", workflow), "plain": App("plain", dsl(
        "plain", {"type": "trigger-schedule", "mode": "cron", "cron_expression": "0 9 * * *"},
        []))}
    start = StartRunDouble()
    _, key = create_key(store, "runner", app="hook")
    _, viewer = create_key(store, "viewer")
    auth = {"Authorization": f"Bearer {key}"}
    with running(serve(apps, start, store)) as url, httpx.Client(base_url=url) as client:
        hook = "/v1/triggers/webhook/hook"
        done = client.post(hook, params={"page": "2", "extra": "x"},
                           headers={**auth, "X-Event-Id": "ev-1"},
                           json={"payload": {"id": 7}, "count": 3, "other": True})
        assert done.status_code == 202, done.text
        assert done.json() == {"ok": True} and done.headers["x-run-id"] == "run-1"
        [(app, inputs)] = start.calls
        assert app == "hook"
        data = inputs["webhook_data"]
        assert data["method"] == "POST"
        # Query values converted by the declared type; undeclared ones kept as text.
        assert data["query_params"] == {"page": 2, "extra": "x"}
        assert inputs["webhook_body"] == {"payload": {"id": 7}, "count": 3, "other": True}
        assert inputs["webhook_headers"]["x-event-id"] == "ev-1"
        # The caller's key never reaches the run.
        assert "authorization" not in {h.lower() for h in inputs["webhook_headers"]}
        assert key not in repr(inputs)

        # The run those inputs start: the trigger node outputs the declared fields.
        result = run_workflow(workflow, inputs, store=False)
        assert result.ok, result.error
        assert result.outputs == {"X_Event_Id": "ev-1", "page": 2, "payload": {"id": 7},
                                  "count": 3}

        refused = {
            "method": client.put(hook, headers={**auth, "X-Event-Id": "e"},
                                 json={"payload": {}}),
            "content type": client.post(hook, headers={**auth, "X-Event-Id": "e"},
                                        data={"payload": "x"}),
            "header": client.post(hook, headers=auth, json={"payload": {}}),
            "body field": client.post(hook, headers={**auth, "X-Event-Id": "e"},
                                      json={"count": 1}),
            "type": client.post(hook, headers={**auth, "X-Event-Id": "e"},
                                json={"payload": "not an object"}),
            "query type": client.post(hook, params={"page": "two"},
                                      headers={**auth, "X-Event-Id": "e"},
                                      json={"payload": {}}),
            "json": client.post(hook, headers={**auth, "X-Event-Id": "e",
                                               "Content-Type": "application/json"},
                                content=b"{not json"),
        }
        messages = {}
        for why, response in refused.items():
            assert response.status_code == 400, (why, response.text)
            assert response.json()["code"] == "bad_request"
            messages[why] = response.json()["message"]
        assert messages["method"] == "HTTP method mismatch. Expected POST, got PUT"
        assert messages["content type"].startswith("Content-type mismatch. Expected "
                                                   "application/json")
        assert messages["header"] == "Required header missing: X-Event-Id"
        assert messages["body field"] == "Required body parameter missing: payload"
        assert messages["type"] == "Parameter 'payload' validation failed: Expected object, " \
                                   "got str"
        assert "Cannot convert 'two' to number" in messages["query type"]
        assert len(start.calls) == 1  # no refused request started a run

        assert client.post(hook, json={"payload": {}}).status_code == 401
        assert client.post(hook, headers={"Authorization": f"Bearer {viewer}"},
                           json={"payload": {}}).status_code == 403
        assert client.post("/v1/triggers/webhook/plain",
                           headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
        _, admin = create_key(store, "admin")
        for missing in ("plain", "nope"):
            response = client.post(f"/v1/triggers/webhook/{missing}",
                                   headers={"Authorization": f"Bearer {admin}"})
            assert response.status_code == 404 and response.json()["code"] == "not_found"
        assert len(start.calls) == 1


def test_form_text_and_file_webhooks(store: RunStore) -> None:
    form = dsl("form", {"type": "trigger-webhook", "method": "post",
                        "content_type": "application/x-www-form-urlencoded",
                        "body": [{"name": "done", "type": "boolean", "required": True},
                                 {"name": "n", "type": "number"}]}, ["done", "n"])
    text = dsl("text", {"type": "trigger-webhook", "method": "post",
                        "content_type": "text/plain",
                        "body": [{"name": "note", "type": "string", "required": True}]},
               ["note"])
    upload = dsl("upload", {"type": "trigger-webhook", "method": "post",
                            "content_type": "multipart/form-data",
                            "body": [{"name": "doc", "type": "file", "required": True},
                                     {"name": "title", "type": "string"}]}, ["doc", "title"])
    apps = {a.name: App(a.name, a) for a in (form, text, upload)}
    start = StartRunDouble()
    saved: list[tuple[str, bytes, str | None]] = []

    async def save_file(name: str, data: bytes, mime_type: str | None) -> dict[str, Any]:
        """Test double of the server's upload folder."""
        saved.append((name, data, mime_type))
        return {"dify_model_identity": "__dify__file__", "filename": name, "size": len(data)}

    with running(serve(apps, start, store, public=True, save_file=save_file)) as url, \
            httpx.Client(base_url=url) as client:
        answer = client.post("/v1/triggers/webhook/form", data={"done": "yes", "n": "2.5"})
        assert answer.status_code == 200
        assert answer.json() == {"status": "success", "message": "Webhook processed successfully"}
        assert start.calls[-1][1]["webhook_body"] == {"done": True, "n": 2.5}
        result = run_workflow(form, start.calls[-1][1], store=False)
        assert result.outputs == {"done": True, "n": 2.5}
        bad = client.post("/v1/triggers/webhook/form", data={"done": "maybe"})
        assert bad.status_code == 400 and "Cannot convert 'maybe' to boolean" in bad.text

        client.post("/v1/triggers/webhook/text", content="remember the milk",
                    headers={"Content-Type": "text/plain; charset=utf-8"})
        result = run_workflow(text, start.calls[-1][1], store=False)
        assert result.outputs == {"note": "remember the milk"}
        empty = client.post("/v1/triggers/webhook/text", content=b"",
                            headers={"Content-Type": "text/plain"})
        assert empty.status_code == 400 and "Required body content missing" in empty.text

        sent = client.post("/v1/triggers/webhook/upload", data={"title": "Q3"},
                           files={"doc": ("report.txt", b"numbers", "text/plain")})
        assert sent.status_code == 200, sent.text
        assert saved == [("report.txt", b"numbers", "text/plain")]
        result = run_workflow(upload, start.calls[-1][1], store=False)
        assert result.ok, result.error
        assert result.outputs["title"] == "Q3"
        assert result.outputs["doc"]["filename"] == "report.txt"

    # Without a place to keep files, a file sent to the webhook is refused, saying why.
    with running(serve(apps, start, store, public=True)) as url:
        refused = httpx.post(f"{url}/v1/triggers/webhook/upload",
                             files={"doc": ("a.txt", b"x", "text/plain")})
        assert refused.status_code == 400 and "does not take files" in refused.text


def test_a_webhook_workflow_runs_from_its_fields_outside_a_server() -> None:
    workflow = dsl("hook", WEBHOOK, ["X_Event_Id", "payload"])
    result = run_workflow(workflow, {"X_Event_Id": "e", "payload": {"a": 1}}, store=False)
    assert result.ok, result.error
    assert result.outputs == {"X_Event_Id": "e", "payload": {"a": 1}}


# -- schedule -------------------------------------------------------------------------------


class FakeClock:
    """Test double of the scheduler's clock: ``sleep`` moves time on at once."""

    def __init__(self, now: datetime, *, oversleep: timedelta = timedelta(0)) -> None:
        self.at = now
        self.oversleep = oversleep
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.at

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.at += timedelta(seconds=seconds) + self.oversleep
        await asyncio.sleep(0)


class RecordingStart:
    """Test double of ``start_run``: records the clock's time of each call."""

    def __init__(self, clock: FakeClock, want: int) -> None:
        self.clock = clock
        self.times: list[tuple[str, datetime, dict[str, Any]]] = []
        self.want = want
        self.enough = asyncio.Event()

    async def __call__(self, app: str, inputs: dict[str, Any]) -> str:
        self.times.append((app, self.clock.now(), inputs))
        if len(self.times) >= self.want:
            self.enough.set()
        return "run"


def schedule_app(name: str, **trigger: Any) -> App:
    return App(name, dsl(name, {"type": "trigger-schedule", **trigger}, []))


async def test_scheduler_fires_on_the_cron_schedule_in_its_time_zone() -> None:
    clock = FakeClock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    start = RecordingStart(clock, want=3)
    apps = {"daily": schedule_app("daily", mode="cron", cron_expression="0 9 * * *",
                                  timezone="Asia/Shanghai")}
    scheduler = Scheduler(apps, start, clock=clock)
    scheduler.start()
    assert scheduler.running
    await asyncio.wait_for(start.enough.wait(), 10)
    await scheduler.stop()
    assert not scheduler.running
    # 09:00 in Shanghai is 01:00 UTC.
    assert [(a, t) for a, t, _ in start.times[:3]] == [
        ("daily", datetime(2026, 1, day, 1, 0, tzinfo=UTC)) for day in (1, 2, 3)]
    assert start.times[0][2] == {}


async def test_a_missed_time_runs_once_not_once_per_miss() -> None:
    # Each sleep overshoots by three days (a suspended laptop).
    clock = FakeClock(datetime(2026, 1, 1, 0, 30, tzinfo=UTC), oversleep=timedelta(days=3))
    start = RecordingStart(clock, want=2)
    apps = {"hourly": schedule_app("hourly", mode="visual", frequency="hourly",
                                   visual_config={"on_minute": 15})}
    scheduler = Scheduler(apps, start, clock=clock)
    scheduler.start()
    await asyncio.wait_for(start.enough.wait(), 10)
    await scheduler.stop()
    first, second = start.times[0][1], start.times[1][1]
    assert second - first == timedelta(days=3, minutes=60)


async def test_a_run_that_cannot_start_does_not_stop_the_scheduler() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    calls: list[datetime] = []
    enough = asyncio.Event()

    async def failing(app: str, inputs: dict[str, Any]) -> None:
        """Test double of a ``start_run`` that fails every time."""
        calls.append(clock.now())
        if len(calls) == 2:
            enough.set()
        raise RuntimeError("the store is locked")

    scheduler = Scheduler({"a": schedule_app("a", mode="cron", cron_expression="*/5 * * * *")},
                          failing, clock=clock)
    scheduler.start()
    await asyncio.wait_for(enough.wait(), 10)
    await scheduler.stop()
    assert calls[1] - calls[0] == timedelta(minutes=5)


def test_visual_schedules_become_difys_cron_expressions() -> None:
    def cron(**config: Any) -> str:
        return schedule_cron(ScheduleConfig.model_validate({"mode": "visual", **config}))

    assert cron(frequency="hourly", visual_config={"on_minute": 5}) == "5 * * * *"
    assert cron(frequency="daily", visual_config={"time": "12:00 AM"}) == "0 0 * * *"
    assert cron(frequency="daily", visual_config={"time": "12:30 PM"}) == "30 12 * * *"
    assert cron(frequency="weekly", visual_config={"time": "2:30 PM",
                                                   "weekdays": ["fri", "mon"]}) == "30 14 * * 1,5"
    assert cron(frequency="monthly", visual_config={"time": "9:05 AM",
                                                    "monthly_days": [15, 1, "last"]}) \
        == "5 9 1,15,L * *"
    with pytest.raises(ValueError, match="weekdays is required"):
        cron(frequency="weekly", visual_config={"time": "2:30 PM"})
    with pytest.raises(ValueError, match="frequency is missing"):
        cron()
    # The next time of a "last day of the month" schedule.
    schedule = Schedule("a", "n", "0 0 L * *", "UTC")
    assert schedule.next_after(datetime(2026, 2, 3, tzinfo=UTC)) == datetime(2026, 2, 28,
                                                                              tzinfo=UTC)


def test_bad_schedules_are_refused_naming_the_node() -> None:
    for trigger, words in (
        ({"mode": "cron", "cron_expression": "0 9 * *"}, "exactly 5 fields"),
        ({"mode": "cron", "cron_expression": "99 9 * * *"}, "not a valid cron expression"),
        ({"mode": "cron", "cron_expression": "0 9 * * *", "timezone": "Mars/Olympus"},
         "not an IANA time zone"),
    ):
        with pytest.raises(WorkflowError) as caught:
            schedule_app("bad", type="trigger-schedule", **trigger)
        assert any(p.node_id == "trigger" and words in p.message
                   for p in caught.value.problems), caught.value
    # Visual mode without a frequency imports (Dify's editor leaves it to the scheduler) but
    # cannot be scheduled: the error names the app, the node and the field.
    apps = {"vague": schedule_app("vague", mode="visual")}
    with pytest.raises(ValueError, match="app 'vague', node 'trigger'.*frequency is missing"):
        schedules_of(apps)


def test_a_schedule_workflow_imports_and_runs() -> None:
    workflow = dsl("tick", {"type": "trigger-schedule", "mode": "cron",
                            "cron_expression": "@hourly"}, [])
    result = run_workflow(workflow, {}, store=False)
    assert result.ok, result.error
    trigger = result.trace.set_index("node_id").loc["trigger"]
    assert trigger["status"] == "succeeded"
    assert trigger["outputs"]["sys.workflow_run_id"] == result.run_id
