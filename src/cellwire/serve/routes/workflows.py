"""Workflow apps: run (blocking or streaming), a run's detail, stop, logs, and reattaching
to a run's stream (``GET /v1/workflow/{run_id}/events``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from cellwire.store import RunNotFound

from ..apps import ServedApp
from ..errors import ServeError
from ..inputs import check_inputs, request_files
from ..principal import Role
from ..runs import ServedRun
from .common import ERRORS, caller, event_stream, state
from .models import StopRequest, WorkflowRunRequest

router = APIRouter(tags=["workflow"], responses=ERRORS)

#: Dify's answer when a route is not for the app's mode (NotWorkflowAppError, NotChatAppError).
NOT_WORKFLOW = ServeError(400, "not_workflow_app",
                          "Please check if your app mode matches the right API route.")


def not_workflow() -> ServeError:
    return ServeError(NOT_WORKFLOW.status, NOT_WORKFLOW.code, NOT_WORKFLOW.message)


def blocking_mode(app: ServedApp, response_mode: str) -> bool:
    """Whether a run request is in blocking mode; refuses it (400) for an app with a
    human-input node, which may pause mid-run where a blocking answer cannot wait."""
    blocking = response_mode == "blocking"
    if blocking and any(node.type == "human-input" for node in app.workflow.nodes.values()):
        raise ServeError(400, "invalid_param",
                         f"this {'chatflow' if app.is_chat else 'workflow'} may pause for "
                         "human input, which blocking mode cannot wait for: use "
                         "response_mode \"streaming\"")
    return blocking


STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {}, "text/event-stream": {}},
          "description": "blocking: the finished run; streaming: Dify's server-sent events"}}


@router.post("/workflows/run", responses=STREAM_DOC)
async def run_workflow(body: WorkflowRunRequest, request: Request) -> Response:
    """Run the app's workflow; ``response_mode`` blocking answers when it ends, streaming
    sends its events as they happen (the run goes on if the client leaves)."""
    principal, app = await caller(request, Role.RUNNER)
    if app.is_chat:
        raise not_workflow()
    served = state(request)
    inputs = check_inputs(app, body.inputs, served.uploads)
    files = request_files(body.files, served.uploads)
    blocking = blocking_mode(app, body.response_mode)
    slot = served.guard.run_slot(principal)
    run = served.runs.start(app, inputs, user=body.user, files=files, slot=slot)
    if not blocking:
        return event_stream(run.buffer.follow(continue_on_pause=False))
    await run.wait()
    return JSONResponse(blocking_answer(run))


def blocking_answer(run: ServedRun) -> dict[str, Any]:
    """Dify's blocking answer: ``{task_id, workflow_run_id, data: {...}}``."""
    finished = run.buffer.last("workflow_finished")
    if finished is None:
        error = run.buffer.last("error")
        raise ServeError(500, "internal_server_error",
                         error["message"] if error else "the run ended without a result")
    data = finished["data"]
    keep = ("id", "workflow_id", "status", "outputs", "error", "elapsed_time", "total_tokens",
            "total_steps", "created_at", "finished_at")
    return {"task_id": run.run_id, "workflow_run_id": run.run_id,
            "data": {k: data.get(k) for k in keep}}


def _stamp(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp())
    try:
        return int(value.timestamp())
    except AttributeError:
        return int(value)


def run_detail(row: dict[str, Any], app: ServedApp) -> dict[str, Any]:
    """A stored run as ``GET /workflows/run/{id}`` answers it."""
    elapsed = row.get("elapsed_ms")
    return {"id": row["run_id"], "workflow_id": app.name, "status": str(row["status"]),
            "inputs": row.get("inputs") or {}, "outputs": row.get("outputs") or {},
            "error": row.get("error"), "total_steps": int(row.get("total_steps") or 0),
            "total_tokens": int(row.get("total_tokens") or 0),
            "created_at": _stamp(row.get("started_at")),
            "finished_at": _stamp(row.get("finished_at")),
            "elapsed_time": round(float(elapsed) / 1000, 6) if elapsed is not None else 0.0}


async def stored_run(request: Request, app: ServedApp, run_id: str) -> dict[str, Any] | None:
    """The stored run ``run_id`` of ``app``, or None."""
    try:
        row = await asyncio.to_thread(state(request).store.run, run_id)
    except (RunNotFound, KeyError):
        return None
    if row.get("workflow") != app.workflow.name or row.get("run_id") != run_id:
        return None
    return row


@router.get("/workflows/run/{workflow_run_id}")
async def get_run(workflow_run_id: str, request: Request) -> dict[str, Any]:
    """A run's status, inputs, outputs, error, steps, tokens and times."""
    _, app = await caller(request, Role.VIEWER)
    row = await stored_run(request, app, workflow_run_id)
    if row is None:
        live = state(request).runs.get(workflow_run_id)
        if live is None or live.app.name != app.name:
            raise ServeError(404, "not_found", "Workflow run not found")
        return {"id": workflow_run_id, "workflow_id": app.name, "status": "running",
                "inputs": {}, "outputs": {}, "error": None, "total_steps": 0,
                "total_tokens": 0, "created_at": int(live.buffer.stream.started_at) or None,
                "finished_at": None, "elapsed_time": 0.0}
    return run_detail(row, app)


@router.post("/workflows/tasks/{task_id}/stop")
async def stop_workflow(task_id: str, body: StopRequest, request: Request) -> dict[str, str]:
    """Stop a running task (the run ends ``stopped``)."""
    _, app = await caller(request, Role.RUNNER)
    if app.is_chat:
        raise not_workflow()
    return await stop_task(request, app, task_id)


async def stop_task(request: Request, app: ServedApp, task_id: str) -> dict[str, str]:
    served = state(request)
    live = served.runs.get(task_id)
    if live is not None and live.app.name == app.name:
        served.runs.stop(task_id)
        return {"result": "success"}
    row = await stored_run(request, app, task_id)
    if row is not None:
        if str(row["status"]) == "running":
            # Started by another worker process of this server: only that one can stop it.
            raise ServeError(409, "task_in_another_worker",
                             f"task {task_id} runs in another worker process of this server, "
                             "which alone can stop it; retry the request (another connection "
                             "may reach that worker), or serve with --workers 1")
        # Dify answers success for a task that already ended: there is nothing left to stop.
        return {"result": "success"}
    raise ServeError(404, "not_found", f"no task {task_id!r} of app {app.name!r}")


@router.get("/workflows/logs")
async def workflow_logs(
        request: Request, keyword: str | None = None,
        status: str | None = Query(None, pattern="^(succeeded|failed|stopped|partial-succeeded|"
                                   "running|paused)$"),
        page: int = Query(1, ge=1, le=99999), limit: int = Query(20, ge=1, le=100),
        created_at__before: datetime | None = None, created_at__after: datetime | None = None,
        created_by_end_user_session_id: str | None = None) -> dict[str, Any]:
    """The app's runs, newest first, a page at a time (Dify's workflow app logs)."""
    _, app = await caller(request, Role.VIEWER)
    frame = await asyncio.to_thread(state(request).store.runs, None, app.workflow.name, status)
    rows: list[dict[str, Any]] = [{str(k): v for k, v in r.items()}
                                  for r in frame.to_dict("records")]
    picked = []
    for row in rows:
        inputs = row.get("inputs") or {}
        user = str(inputs.get("sys.user_id") or "")
        started = row.get("started_at")
        if created_by_end_user_session_id and user != created_by_end_user_session_id:
            continue
        if keyword and keyword not in f"{inputs} {row.get('outputs')}":
            continue
        if created_at__before and started is not None and started > _aware(created_at__before):
            continue
        if created_at__after and started is not None and started < _aware(created_at__after):
            continue
        picked.append((row, user))
    start = (page - 1) * limit
    data = [log_item(row, user, app) for row, user in picked[start:start + limit]]
    return {"page": page, "limit": limit, "total": len(picked),
            "has_more": start + limit < len(picked), "data": data}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def log_item(row: dict[str, Any], user: str, app: ServedApp) -> dict[str, Any]:
    detail = run_detail(row, app)
    return {"id": row["run_id"],
            "workflow_run": {"id": row["run_id"], "version": row.get("version") or "",
                             "status": detail["status"], "error": detail["error"],
                             "elapsed_time": detail["elapsed_time"],
                             "total_tokens": detail["total_tokens"],
                             "total_steps": detail["total_steps"],
                             "created_at": detail["created_at"],
                             "finished_at": detail["finished_at"]},
            "created_from": "service-api", "created_by_role": "end_user",
            "created_by_account": None,
            "created_by_end_user": {"id": user, "type": "service_api", "is_anonymous": False,
                                    "session_id": user},
            "created_at": detail["created_at"]}


@router.get("/workflow/{run_id}/events", responses=STREAM_DOC)
async def run_events(run_id: str, request: Request, continue_on_pause: bool = False,
                     include_state_snapshot: bool = False, user: str | None = None) -> Response:
    """Reattach to a run's stream: its events from the first, then live ones until it ends
    (or pauses, unless ``continue_on_pause``)."""
    _, app = await caller(request, Role.VIEWER)
    live = state(request).runs.get(run_id)
    if live is not None and live.app.name == app.name:
        return event_stream(live.buffer.follow(continue_on_pause=continue_on_pause))
    row = await stored_run(request, app, run_id)
    if row is None:
        raise ServeError(404, "not_found", "Workflow run not found")
    return event_stream(_replayed(row, app))


async def _replayed(row: dict[str, Any], app: ServedApp) -> AsyncIterator[dict[str, Any]]:
    """A run this process no longer holds (or never ran): its stored start and end."""
    detail = run_detail(row, app)
    run_id = detail["id"]
    base = {"task_id": run_id, "workflow_run_id": run_id}
    yield {"event": "workflow_started", **base,
           "data": {"id": run_id, "workflow_id": app.name, "inputs": detail["inputs"],
                    "created_at": detail["created_at"], "reason": "initial"}}
    if detail["status"] in ("succeeded", "partial-succeeded", "failed", "stopped"):
        yield {"event": "workflow_finished", **base,
               "data": {**detail, "exceptions_count": int(row.get("exceptions_count") or 0),
                        "created_by": {}, "files": []}}
    elif detail["status"] == "paused":
        yield {"event": "workflow_paused", **base,
               "data": {**detail, "workflow_run_id": run_id, "paused_nodes": [],
                        "reasons": []}}


__all__ = ["blocking_answer", "blocking_mode", "router", "run_detail", "stop_task"]
