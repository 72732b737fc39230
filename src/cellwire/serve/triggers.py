"""Triggers of served apps (Dify 1.10+): a webhook URL for trigger-webhook apps, and a cron
scheduler for trigger-schedule apps, both starting runs through ``start_run``.

``start_run(app_name, inputs)`` is the server's way to start a run off the request path (it
returns once the run is started, with its run id or anything else); this module only decides
when to call it and with what inputs:

* ``POST /v1/triggers/webhook/{app}`` (and the other methods Dify's webhook URL takes): the
  request is checked against the app's trigger-webhook node as Dify checks it (method, content
  type, required headers, query parameters and body fields, their types; 400 otherwise) and
  the run gets Dify's inputs (``webhook_data``, ``webhook_headers``, ``webhook_query_params``,
  ``webhook_body``). The answer is the node's ``status_code`` and ``response_body``. Unlike
  Dify's, whose URL holds a secret id, the URL names the app, so the caller needs a ``runner``
  key for the app (``public=True`` opens it). Credentials (``Authorization``, ``Cookie``,
  ``Proxy-Authorization``) are never passed to the run unless the node declares the header.
* :class:`Scheduler`: an asyncio task that calls ``start_run(app, {})`` at each time the app's
  trigger-schedule node's cron expression names, in the node's time zone, while it runs.
  A time missed (the server was busy or asleep) is run once, late, never once per miss.

A workflow runs from its first start-type node; an app whose workflow holds several triggers
is served by the first of each kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from cellwire.model import Node, Workflow
from cellwire.nodes.triggers import (
    ScheduleConfig,
    WebhookConfig,
    WebhookRequestError,
    check_request,
    content_type_of,
    response_of,
    schedule_cron,
)

from .errors import ServeError
from .principal import Role

log = logging.getLogger(__name__)

#: Headers that carry credentials: kept out of a run's inputs unless the node asks for them.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
#: Seconds a scheduled run may take to start before the scheduler gives up on it.
START_TIMEOUT = 60.0
#: The methods Dify's webhook URL answers (the node's ``method`` decides which one starts a run).
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


class ServedWorkflow(Protocol):
    """What triggers read of a served app (``serve.apps.ServedApp`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def workflow(self) -> Workflow: ...


class StartRun(Protocol):
    """Starts a run of app ``app`` with ``inputs`` off the request path; returns once it is
    started (its result, e.g. the run id, is passed back in ``X-Run-Id`` when it is a str)."""

    def __call__(self, app: str, inputs: dict[str, Any]) -> Awaitable[Any]: ...


#: Keeps a webhook's file (a multipart file field or an octet-stream body) where runs may read
#: it: ``(filename, data, mime type) -> Dify file object``.
SaveFile = Callable[[str, bytes, str | None], Awaitable[dict[str, Any]]]


def trigger_node(workflow: Workflow, kind: str) -> Node | None:
    """The first top-level node of type ``kind`` (``trigger-webhook``, ``trigger-schedule``)."""
    for node in workflow.children(None):
        if node.type == kind:
            return node
    return None


# -- webhook --------------------------------------------------------------------------------


def webhook_router(apps: Mapping[str, ServedWorkflow], start_run: StartRun, *,
                   public: bool = False, save_file: SaveFile | None = None) -> APIRouter:
    """The webhook endpoint ``/v1/triggers/webhook/{app}`` of every trigger-webhook app in
    ``apps`` (read on each request). Without ``public``, the caller needs a ``runner`` key for
    the app (``request.app.state.guard``). ``save_file`` keeps files sent to the webhook; without
    it, a webhook that takes files answers 400."""
    router = APIRouter()

    async def webhook(app: str, request: Request) -> Response:
        if not public:
            await request.app.state.guard.check(request, app=app, role=Role.RUNNER)
        served = apps.get(app)
        node = trigger_node(served.workflow, "trigger-webhook") if served is not None else None
        if served is None or node is None:
            raise ServeError(404, "not_found", f"No app {app!r} with a webhook trigger is served.")
        try:
            config = WebhookConfig.model_validate(node.config)
        except ValidationError as exc:  # validated on load; a config edited since is refused
            raise ServeError(500, "internal_server_error",
                             f"node {node.id!r} of app {app!r} has a bad webhook config: "
                             f"{exc.errors()[0]['msg']}") from None
        try:
            data = check_request(config, await _request_data(request, config, save_file))
        except WebhookRequestError as exc:
            raise ServeError(400, "bad_request", str(exc)) from None
        started = await start_run(app, webhook_inputs(data))
        body, status = response_of(config)
        headers = {"X-Run-Id": started} if isinstance(started, str) else None
        return JSONResponse(body, status, headers=headers)

    # A route per method: one route with several would share one OpenAPI operation id.
    for method in METHODS:
        router.add_api_route("/v1/triggers/webhook/{app}", webhook, methods=[method],
                             operation_id=f"trigger_webhook_{method.lower()}",
                             summary="Start a run of a trigger-webhook app", tags=["triggers"])
    return router


def webhook_inputs(data: dict[str, Any]) -> dict[str, Any]:
    """A webhook run's inputs, as Dify builds them (``build_workflow_inputs``)."""
    return {"webhook_data": data, "webhook_headers": data.get("headers", {}),
            "webhook_query_params": data.get("query_params", {}),
            "webhook_body": data.get("body", {})}


async def _request_data(request: Request, config: WebhookConfig,
                        save_file: SaveFile | None) -> dict[str, Any]:
    """Dify's ``extract_webhook_data``: method, headers, query parameters, body and files."""
    wanted = {h.name.lower() for h in config.headers}
    headers = {name: value for name, value in request.headers.items()
               if name.lower() not in CREDENTIAL_HEADERS or name.lower() in wanted}
    data: dict[str, Any] = {"method": request.method, "headers": headers,
                            "query_params": dict(request.query_params), "body": {},
                            "files": {}}
    content_type = content_type_of(request.headers)
    if content_type == "application/json":
        raw = await request.body()
        if raw.strip():
            try:
                data["body"] = json.loads(raw)
            except ValueError as exc:
                raise WebhookRequestError(f"Invalid JSON body: {exc}") from None
    elif content_type == "application/x-www-form-urlencoded":
        text = (await request.body()).decode("utf-8", "replace")
        data["body"] = dict(parse_qsl(text, keep_blank_values=True))
    elif content_type == "multipart/form-data":
        form = await request.form()
        for name, value in form.multi_items():
            if isinstance(value, str):
                data["body"].setdefault(name, value)
            elif value.filename:
                data["files"][name] = await _saved(save_file, value.filename,
                                                   await value.read(), value.content_type)
    elif content_type == "application/octet-stream":
        raw = await request.body()
        data["body"] = {"raw": await _saved(save_file, "body", raw, None) if raw else None}
    else:  # text/plain, and what Dify reads as text: any other type
        data["body"] = {"raw": (await request.body()).decode("utf-8", "replace")}
    return data


async def _saved(save_file: SaveFile | None, name: str, data: bytes,
                 mime_type: str | None) -> dict[str, Any]:
    if save_file is None:
        raise WebhookRequestError("this server does not take files in webhook requests; send "
                                  "the data as JSON, or start the server with file uploads")
    return await save_file(name, data, mime_type)


# -- schedule -------------------------------------------------------------------------------


class SchedulerClock(Protocol):
    """What the scheduler reads time from and waits on (tests give a double)."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class WallClock:
    """The real clock: UTC now, ``asyncio.sleep``."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Schedule:
    """When one app runs: its trigger-schedule node's cron expression in its time zone."""

    app: str
    node_id: str
    cron: str
    timezone: str

    def next_after(self, moment: datetime) -> datetime:
        """The first time after ``moment`` the schedule names, in UTC (as Dify computes it:
        ``calculate_next_run_at``)."""
        from croniter import croniter

        local = moment.astimezone(ZoneInfo(self.timezone))
        found: datetime = croniter(self.cron, local).get_next(datetime)
        return found.astimezone(UTC)


def schedules_of(apps: Mapping[str, ServedWorkflow]) -> list[Schedule]:
    """The schedule of every trigger-schedule app; ValueError naming the app, the node and the
    field when one cannot be scheduled."""
    found = []
    for name, app in apps.items():
        node = trigger_node(app.workflow, "trigger-schedule")
        if node is None:
            continue
        try:
            config = ScheduleConfig.model_validate(node.config)
            cron = schedule_cron(config)
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"app {name!r}, node {node.id!r} (trigger-schedule): {exc}") from None
        found.append(Schedule(name, node.id, cron, config.timezone))
    return found


class Scheduler:
    """Runs each trigger-schedule app of ``apps`` on its schedule, through ``start_run``, from
    :meth:`start` until :meth:`stop`. ``clock`` defaults to the wall clock."""

    def __init__(self, apps: Mapping[str, ServedWorkflow], start_run: StartRun, *,
                 clock: SchedulerClock | None = None):
        self.schedules = schedules_of(apps)
        self.start_run = start_run
        self.clock: SchedulerClock = clock or WallClock()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start scheduling on the running event loop (nothing to do without schedules)."""
        if self.running or not self.schedules:
            return
        self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                            name="cellwire-scheduler")

    async def stop(self) -> None:
        """Stop scheduling; runs already started go on (the server owns them)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        now = self.clock.now()
        due = {s: s.next_after(now) for s in self.schedules}
        while True:
            moment = min(due.values())
            wait = (moment - self.clock.now()).total_seconds()
            if wait > 0:
                await self.clock.sleep(wait)
                continue  # the clock may have moved less (or more) than asked: look again
            now = self.clock.now()
            for schedule, at in list(due.items()):
                if at <= now:
                    await self._fire(schedule, at)
                    # From now, not from `at`: a missed time runs once, not once per miss.
                    due[schedule] = schedule.next_after(max(at, now))

    async def _fire(self, schedule: Schedule, at: datetime) -> None:
        # Awaited in turn: start_run returns once the run is started, not when it ends.
        try:
            await asyncio.wait_for(self.start_run(schedule.app, {}), START_TIMEOUT)
        except Exception:  # the scheduler outlives a run that could not start
            log.exception("scheduled run of app %r (due %s) could not start", schedule.app,
                          at.isoformat())


__all__ = ["CREDENTIAL_HEADERS", "Schedule", "Scheduler", "SchedulerClock", "ServedWorkflow",
           "StartRun", "WallClock", "schedules_of", "trigger_node", "webhook_inputs",
           "webhook_router"]
