"""Vision: image files as parts of the user's message.

A local file is read only when the run's file policy (``runtime.files``) grants it; a runtime
without one reads no local files (:mod:`cellwire.services.files`)."""

from __future__ import annotations

import base64
import mimetypes
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cellwire.engine import NodeContext
from cellwire.engine.services import FileAccessDenied, FilePolicy
from cellwire.services.files import NoLocalFiles
from cellwire.services.llm import ChatMessage
from cellwire.services.llm.base import ContentPart, image_part, text_part

from .config import LLMConfigError, VisionConfig, VisionConfigs

#: The largest local image sent (it goes as base64); larger ones are a configuration error.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
_REMOTE = ("http://", "https://", "data:")
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


async def attach_images(ctx: NodeContext, vision: VisionConfig, messages: list[ChatMessage],
                         notes: list[str]) -> None:
    """Put the image files at ``vision.configs.variable_selector`` before the text of the last
    user message (a new user message when the last is not one), as Dify does."""
    configs = vision.configs or VisionConfigs()
    field = "vision.configs.variable_selector"
    value = ctx.get(configs.variable_selector, None, field=field)
    files = value if isinstance(value, list) else [] if value is None else [value]
    parts: list[ContentPart] = []
    skipped: list[str] = []
    for index, item in enumerate(files):
        where = f"{field}[{index}]" if isinstance(value, list) else field
        url = await _image_url(ctx, item, where)
        if url is None:
            skipped.append(_file_name(item))
        else:
            parts.append(image_part(url, configs.detail))
    if skipped:
        notes.append(f"vision: {len(skipped)} file(s) that are not images were not sent: "
                     + ", ".join(skipped))
    if not parts:
        return
    last = messages[-1]
    if last.role == "user" and not last.tool_calls:
        if isinstance(last.content, str):
            last.content = [*parts, text_part(last.content)] if last.content else parts
        else:
            last.content = [*parts, *last.content]
    else:
        messages.append(ChatMessage("user", parts))


async def _image_url(ctx: NodeContext, item: Any, field: str) -> str | None:
    """A URL (http, https or data) for the image ``item``; None when it is not an image.

    ``item`` is a Dify file object (``type``, ``transfer_method``, ``remote_url`` / ``url``,
    cellwire's ``path``), a URL, or the path of a local file, which is read and sent as a
    base64 ``data:`` URL."""
    mime: str | None = None
    if isinstance(item, str):
        url, path = (item, None) if item.startswith(_REMOTE) else (None, item)
    elif isinstance(item, dict):
        mime = str(item.get("mime_type") or "") or None
        if item.get("type") not in (None, "", "image") or (
                mime and not mime.startswith("image/")):
            return None
        url = str(item.get("remote_url") or item.get("url") or "") or None
        path = str(item.get("path") or "") or None
        if url is not None and not url.startswith(_REMOTE):
            url, path = None, path or url  # a local path (or file:// URL) given as its url
        if url is None and path is None:
            raise LLMConfigError(
                f"the file {_file_name(item)} has no url and no path", field=field,
                hint="give the file a remote_url (transfer_method: remote_url), or the "
                     "path of a local copy (transfer_method: local_file, path: ...): "
                     "cellwire has no copy of files uploaded to Dify")
    else:
        raise LLMConfigError(f"a {type(item).__name__} is not a file", field=field,
                             hint="select a file variable: Dify file objects, URLs or paths")
    if url is not None:
        if url.startswith("data:") and not url.startswith("data:image/"):
            return None
        return url
    assert path is not None
    return await ctx.to_thread(_data_url, path, mime, field, ctx.runtime.files or NoLocalFiles())


def _data_url(path: str, mime: str | None, field: str, files: FilePolicy) -> str | None:
    """The local image at ``path`` as a base64 ``data:`` URL (None if it is no image), when
    the run's file policy ``files`` lets it read the file."""
    if path.startswith("file://"):
        path = unquote(urlsplit(path).path)
    target = Path(path).expanduser()
    try:
        granted = files.check(path)
    except FileAccessDenied as exc:
        raise LLMConfigError(f"the image is not sent: {exc}", field=field,
                             hint="grant its folder as said, or send the image as a URL the "
                                  "model can fetch") from None
    try:
        # The policy resolved every symlink; one swapped in since is not followed.
        fd = os.open(granted, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise LLMConfigError(f"cannot read the image {path!r}: {exc.strerror or exc}",
                             field=field, hint="check the file's path") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise LLMConfigError(
            f"the image {target.name!r} is larger than {_size(MAX_IMAGE_BYTES)}",
            field=field, hint="send a smaller image, or a URL the model can fetch")
    sniffed = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
    if sniffed is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        sniffed = "image/webp"
    mime = mime or sniffed or mimetypes.guess_type(target.name)[0]
    if not mime or not mime.startswith("image/"):
        return None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _size(count: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def _file_name(item: Any) -> str:
    if isinstance(item, dict):
        name = item.get("filename") or item.get("name") or item.get("remote_url") or \
            item.get("url") or item.get("path") or item.get("upload_file_id") or "file"
        return repr(str(name))
    return repr(str(item)[:100])

