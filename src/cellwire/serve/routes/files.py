"""``POST /v1/files/upload``: a file for a later run's inputs (``upload_file_id``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from ..errors import ServeError
from ..principal import Role
from ..uploads import MAX_UPLOAD
from .common import ERRORS, caller, state

router = APIRouter(tags=["files"], responses=ERRORS)


@router.post("/files/upload", status_code=201)
async def upload_file(request: Request, file: Annotated[UploadFile | None, File()] = None,
                      user: Annotated[str | None, Form()] = None) -> dict[str, Any]:
    """Keep an uploaded file (multipart ``file``, ``user``); Dify answers 201 with its id."""
    await caller(request, Role.RUNNER)
    if file is None:
        raise ServeError(400, "no_file_uploaded", "Please upload your file.")
    data = await file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise ServeError(413, "file_too_large",
                         f"File size exceeded. {MAX_UPLOAD // (1024 * 1024)} MB is the limit.")
    if not file.filename:
        raise ServeError(400, "filename_not_exists_error", "The specified filename does not "
                         "exist.")
    return await asyncio.to_thread(state(request).uploads.save, file.filename, data,
                                   user=user or "", mime_type=file.content_type)


__all__ = ["router"]
