"""Chat apps (advanced-chat): chat messages (blocking or streaming) and their stop, the
conversations (list, rename, delete, variables) and their messages."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from cellwire.store.conversations import Conversation

from ..apps import ServedApp
from ..errors import ServeError
from ..inputs import check_inputs, request_files
from ..principal import Role
from ..runs import ServedRun, new_conversation_id
from .common import ERRORS, caller, event_stream, state
from .models import ChatRequest, DeleteRequest, RenameRequest, StopRequest
from .workflows import STREAM_DOC, blocking_mode, stop_task

router = APIRouter(tags=["chat"], responses=ERRORS)


def not_chat() -> ServeError:
    return ServeError(400, "not_chat_app",
                      "Please check if your app mode matches the right API route.")


async def chat_app(request: Request, role: Role) -> tuple[Any, ServedApp]:
    principal, app = await caller(request, role)
    if not app.is_chat:
        raise not_chat()
    return principal, app


async def conversation(request: Request, app: ServedApp, conversation_id: str) -> Conversation:
    found = await asyncio.to_thread(state(request).conversations.get, app.workflow.name,
                                    conversation_id)
    if found is None:
        raise ServeError(404, "not_found", "Conversation Not Exists.")
    return found


@router.post("/chat-messages", responses=STREAM_DOC)
async def chat_message(body: ChatRequest, request: Request) -> Response:
    """One turn of a conversation: ``query`` with the app's ``inputs``; a new conversation
    when ``conversation_id`` is empty."""
    principal, app = await chat_app(request, Role.RUNNER)
    served = state(request)
    conversation_id = body.conversation_id or None
    if conversation_id is not None:
        await conversation(request, app, conversation_id)
    else:
        conversation_id = new_conversation_id()
    inputs = check_inputs(app, body.inputs, served.uploads)
    files = request_files(body.files, served.uploads)
    blocking = blocking_mode(app, body.response_mode)
    slot = served.guard.run_slot(principal)
    run = served.runs.start(app, inputs, user=body.user, query=body.query,
                            conversation_id=conversation_id, files=files, slot=slot)
    if not blocking:
        return event_stream(run.buffer.follow(continue_on_pause=False))
    result = await run.wait()
    return JSONResponse(blocking_message(run, result.answer if result else ""))


def blocking_message(run: ServedRun, answer: str) -> dict[str, Any]:
    """Dify's blocking chat answer (``event: message``), or 400 when the turn failed."""
    finished = run.buffer.last("workflow_finished")
    if finished is None or finished["data"]["status"] not in ("succeeded", "partial-succeeded"):
        error = (finished or {}).get("data", {}).get("error") or "the run ended without an answer"
        raise ServeError(400, "completion_request_error", str(error))
    stream = run.buffer.stream
    return {"event": "message", "task_id": run.run_id, "id": run.run_id,
            "message_id": run.run_id, "conversation_id": stream.conversation_id,
            "mode": "advanced-chat", "answer": answer,
            "metadata": {"usage": stream.usage(), "retriever_resources": []},
            "created_at": int(stream.started_at)}


@router.post("/chat-messages/{task_id}/stop")
async def stop_chat(task_id: str, body: StopRequest, request: Request) -> dict[str, str]:
    """Stop a chat turn that is still running."""
    _, app = await chat_app(request, Role.RUNNER)
    return await stop_task(request, app, task_id)


def conversation_item(found: Conversation) -> dict[str, Any]:
    return {"id": found.id, "name": found.name, "inputs": found.inputs, "status": "normal",
            "introduction": "", "created_at": int(found.created_at),
            "updated_at": int(found.updated_at)}


@router.get("/conversations")
async def list_conversations(request: Request, user: str | None = None,
                             last_id: str | None = None,
                             limit: int = Query(20, ge=1, le=100),
                             sort_by: str = "-updated_at") -> dict[str, Any]:
    """The app's conversations, most recently active first (the user's own when ``user``)."""
    _, app = await chat_app(request, Role.VIEWER)
    found, more = await asyncio.to_thread(state(request).conversations.listed,
                                          app.workflow.name, user=user, limit=limit,
                                          last_id=last_id)
    return {"limit": limit, "has_more": more, "data": [conversation_item(c) for c in found]}


@router.post("/conversations/{conversation_id}/name")
async def rename_conversation(conversation_id: str, body: RenameRequest,
                              request: Request) -> dict[str, Any]:
    """Name a conversation (``auto_generate``: after its first question)."""
    _, app = await chat_app(request, Role.RUNNER)
    found = await conversation(request, app, conversation_id)
    name = body.name
    if body.auto_generate or not name:
        turns = await asyncio.to_thread(state(request).conversations.messages,
                                        app.workflow.name, conversation_id)
        name = (turns[0].query if turns else "")[:40] or "New conversation"
    await asyncio.to_thread(state(request).conversations.rename, app.workflow.name,
                            conversation_id, name)
    return conversation_item(Conversation(found.id, name, found.inputs, found.user,
                                          found.created_at, found.updated_at))


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, request: Request,
                              body: DeleteRequest | None = None) -> Response:
    """Delete a conversation (it no longer lists; its runs stay in the store)."""
    _, app = await chat_app(request, Role.RUNNER)
    await conversation(request, app, conversation_id)
    await asyncio.to_thread(state(request).conversations.delete, app.workflow.name,
                            conversation_id)
    return Response(status_code=204)


@router.get("/conversations/{conversation_id}/variables")
async def conversation_variables(conversation_id: str, request: Request,
                                 user: str | None = None, last_id: str | None = None,
                                 limit: int = Query(20, ge=1, le=100),
                                 variable_name: str | None = None) -> dict[str, Any]:
    """The conversation variables as its last turn left them."""
    _, app = await chat_app(request, Role.VIEWER)
    found = await conversation(request, app, conversation_id)
    values = await asyncio.to_thread(state(request).store.conversation_variables,
                                     app.workflow.name, conversation_id)
    data: list[dict[str, Any]] = []
    for var in app.workflow.conversation_variables:
        if variable_name is not None and var.name != variable_name:
            continue
        data.append({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{app.name}/{var.name}")),
                     "name": var.name, "value_type": var.value_type,
                     "value": values.get(var.name, var.value), "description": var.description,
                     "created_at": int(found.created_at), "updated_at": int(found.updated_at)})
    if last_id is not None:
        ids = [d["id"] for d in data]
        data = data[ids.index(last_id) + 1:] if last_id in ids else []
    return {"limit": limit, "has_more": len(data) > limit, "data": data[:limit]}


@router.get("/messages")
async def list_messages(request: Request, conversation_id: str | None = None,
                        user: str | None = None, first_id: str | None = None,
                        limit: int = Query(20, ge=1, le=100)) -> dict[str, Any]:
    """A conversation's messages, oldest first; ``first_id`` pages back from that message."""
    _, app = await chat_app(request, Role.VIEWER)
    if not conversation_id:
        raise ServeError(400, "invalid_param", "conversation_id is required")
    await conversation(request, app, conversation_id)
    turns = await asyncio.to_thread(state(request).conversations.messages, app.workflow.name,
                                    conversation_id)
    if first_id is not None:
        ids = [t.id for t in turns]
        if first_id not in ids:
            raise ServeError(404, "not_found", "First Message Not Exists.")
        turns = turns[:ids.index(first_id)]
    page = turns[-limit:]
    data: list[dict[str, Any]] = [{"id": t.id, "conversation_id": t.conversation_id, "parent_message_id": None,
             "inputs": t.inputs, "query": t.query, "answer": t.answer, "message_files": [],
             "feedback": None, "retriever_resources": [], "agent_thoughts": [],
             "status": "normal" if t.status in ("succeeded", "partial-succeeded") else "error",
             "error": None, "created_at": int(t.created_at)} for t in page]
    return {"limit": limit, "has_more": len(turns) > len(page), "data": data}


__all__ = ["router"]
