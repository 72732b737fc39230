"""What the routes share: finding the app a request is for, through the guard."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..apps import ServedApp
from ..errors import ServeError
from ..principal import Principal, Role
from ..state import ServeState

#: Header and query parameter that pick the app when a key is bound to none.
APP_HEADER = "X-Cellwire-App"
APP_PARAM = "app"
#: Seconds between Dify's ``ping`` events on a stream.
PING_SECONDS = 10.0


class DifyError(BaseModel):
    """Every error answer, as Dify's: a machine code, a message, the HTTP status."""

    code: str
    message: str
    status: int


#: The error answers every route documents (``/openapi.json``), in Dify's shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": DifyError, "description": text} for status, text in (
        (400, "invalid request (invalid_param, app_required, not_workflow_app, ...)"),
        (401, "no or bad credential (unauthorized)"),
        (403, "the key's role or app does not allow it (forbidden)"),
        (404, "no such app, run, task, conversation or form (not_found)"),
        (413, "request body too large (request_entity_too_large)"),
        (429, "rate or concurrent-run limit (too_many_requests, with Retry-After)"),
    )}


def state(request: Request) -> ServeState:
    found: ServeState = request.app.state.serve
    return found


async def caller(request: Request, role: Role) -> tuple[Principal, ServedApp]:
    """The caller (through the guard) and the app the request is for: the key's bound app,
    else the ``X-Cellwire-App`` header or ``app`` parameter, else the only app served."""
    served = state(request)
    named = request.headers.get(APP_HEADER) or request.query_params.get(APP_PARAM)
    if named is not None and named not in served.apps:
        # Authenticate first: an unknown caller learns nothing about which apps exist.
        await served.guard.check(request, app=None, role=role)
        raise ServeError(404, "app_not_found",
                         f"no app {named!r} is served; the apps are: {', '.join(served.apps)}")
    if named is None and len(served.apps) == 1:
        named = next(iter(served.apps))
    principal = await served.guard.check(request, app=named, role=role)
    if named is None:
        named = principal.app
    if named is None:
        raise ServeError(400, "app_required",
                         f"this server serves several apps ({', '.join(served.apps)}): name one "
                         f"with the {APP_HEADER} header or the ?{APP_PARAM}= parameter")
    if named not in served.apps:
        raise ServeError(404, "app_not_found", f"the key's app {named!r} is not served here")
    return principal, served.apps[named]


def event_stream(events: AsyncIterator[dict[str, Any]]) -> EventSourceResponse:
    """Dify's stream: ``data: {json}`` per event, ``event: ping`` every 10 s."""

    async def frames() -> AsyncIterator[ServerSentEvent]:
        async for item in events:
            yield ServerSentEvent(data=json.dumps(item, ensure_ascii=False, default=str))

    return EventSourceResponse(frames(), ping=PING_SECONDS, sep="\n",
                               ping_message_factory=lambda: ServerSentEvent(event="ping"),
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def user_of(body: dict[str, Any] | None, request: Request | None = None) -> str:
    """The end user a request names (``user`` in the body or query), as Dify requires it."""
    value = (body or {}).get("user") if body is not None else None
    if value is None and request is not None:
        value = request.query_params.get("user")
    if value is None or value == "":
        raise ServeError(400, "invalid_param", "user is required: give the end user's id "
                         "(\"user\": \"abc-123\")")
    if not isinstance(value, str):
        raise ServeError(400, "invalid_param", "user must be a string")
    return value


__all__ = ["APP_HEADER", "APP_PARAM", "ERRORS", "PING_SECONDS", "DifyError", "caller", "event_stream", "state",
           "user_of"]
