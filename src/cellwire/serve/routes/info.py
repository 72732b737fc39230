"""What a client asks about an app: ``/info``, ``/parameters`` (its input form and
features) and ``/meta``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..principal import Role
from ..uploads import MAX_UPLOAD
from .common import ERRORS, caller

router = APIRouter(tags=["app"], responses=ERRORS)


@router.get("/info")
async def app_info(request: Request) -> dict[str, Any]:
    """The app's name, description, tags, mode and author."""
    _, app = await caller(request, Role.VIEWER)
    return {"name": app.name, "description": app.workflow.description, "tags": [],
            "mode": app.mode, "author_name": str(app.workflow.meta.get("author_name") or "")}


def _enabled(features: dict[str, Any], name: str) -> dict[str, Any]:
    value = features.get(name)
    return dict(value) if isinstance(value, dict) else {"enabled": False}


@router.get("/parameters")
async def app_parameters(request: Request, user: str | None = None) -> dict[str, Any]:
    """The start form (``user_input_form``) and the app's features, as Dify lists them."""
    _, app = await caller(request, Role.VIEWER)
    features = app.workflow.features or {}
    size_mb = MAX_UPLOAD // (1024 * 1024)
    return {
        "opening_statement": str(features.get("opening_statement") or ""),
        "suggested_questions": list(features.get("suggested_questions") or []),
        "suggested_questions_after_answer": _enabled(features,
                                                     "suggested_questions_after_answer"),
        "speech_to_text": _enabled(features, "speech_to_text"),
        "text_to_speech": _enabled(features, "text_to_speech"),
        "retriever_resource": _enabled(features, "retriever_resource"),
        "annotation_reply": _enabled(features, "annotation_reply"),
        "more_like_this": _enabled(features, "more_like_this"),
        "sensitive_word_avoidance": _enabled(features, "sensitive_word_avoidance"),
        "user_input_form": app.user_input_form(),
        "file_upload": _enabled(features, "file_upload"),
        "system_parameters": {"file_size_limit": size_mb, "image_file_size_limit": size_mb,
                              "audio_file_size_limit": size_mb,
                              "video_file_size_limit": size_mb,
                              "workflow_file_upload_limit": 10},
    }


@router.get("/meta")
async def app_meta(request: Request) -> dict[str, Any]:
    """The icons of the tools the app uses (none: cellwire's tools have no icons)."""
    await caller(request, Role.VIEWER)
    return {"tool_icons": {}}


__all__ = ["router"]
