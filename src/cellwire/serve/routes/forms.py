"""Human-input forms of paused runs: ``GET|POST /v1/form/human_input/{form_token}``.

The form token is the credential (it is only ever shown to whoever may answer), so these
routes ask the guard for nothing. Answering resumes the run; a client following the run's
stream with ``continue_on_pause=true`` sees it go on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from ..errors import ServeError
from ..events import form_input
from .common import ERRORS, DifyError, state
from .models import FormSubmit

#: Dify's answers for a form: not found, bad answer, answered or expired (412).
FORM_ERRORS: dict[int | str, dict[str, Any]] = {
    400: ERRORS[400], 404: ERRORS[404],
    412: {"model": DifyError, "description": "the form was answered or expired"}}

router = APIRouter(tags=["human input"], responses=FORM_ERRORS)


@router.get("/form/human_input/{form_token}")
async def get_form(form_token: str, request: Request) -> dict[str, Any]:
    """The form: its content, inputs, default values, actions and expiration time."""
    try:
        stored = await asyncio.to_thread(state(request).store.form, form_token)
    except KeyError:
        raise ServeError(404, "not_found", "Form not found") from None
    form = stored.form
    if stored.status != "waiting":
        raise ServeError(412, "human_input_form_submitted", "the form was already submitted")
    if form.expired(time.time()):
        raise ServeError(412, "human_input_form_expired", "the form has expired")
    fields = [{"name": f.name, "type": f.type, "default": f.default, "options": f.options}
              for f in form.fields]
    return {"form_content": form.content, "inputs": [form_input(f) for f in fields],
            "resolved_default_values": {f.name: "" if f.default is None else str(f.default)
                                        for f in form.fields},
            "user_actions": [{"id": a.id, "title": a.title or a.id,
                              "button_style": a.button_style} for a in form.actions],
            "expiration_time": int(form.expires_at) if form.expires_at else None}


@router.post("/form/human_input/{form_token}")
async def submit_form(form_token: str, body: FormSubmit, request: Request) -> dict[str, Any]:
    """Answer the form with one of its actions and its inputs; the run resumes."""
    served = state(request)
    await served.runs.answer(form_token, body.action, body.inputs, served.apps)
    return {}


__all__ = ["router"]
