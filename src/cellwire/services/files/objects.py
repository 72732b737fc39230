"""File variables in Dify's shape, and reading the bytes one names.

A file is a dict as Dify passes it between nodes: ``type`` (document, image, audio, video,
custom), ``transfer_method`` (``local_file`` or ``remote_url``), ``remote_url`` / ``url``,
``related_id``, ``filename``, ``extension``, ``mime_type``, ``size``; cellwire adds ``path``,
the local copy it reads. Local files are read only where the run's file policy grants them;
remote URLs are fetched with the shared HTTP client under the run's network policy (every
address checked, no redirects followed, the binary size cap).
"""

from __future__ import annotations

import mimetypes
import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from cellwire.engine.services import FileAccessDenied, FilePolicy, HTTPService, NetworkGuard

DIFY_FILE = "__dify__file__"
_DOCUMENTS = {".txt", ".md", ".markdown", ".html", ".htm", ".xml", ".json", ".yaml", ".yml",
              ".csv", ".pdf", ".docx", ".doc", ".pptx", ".ppt", ".xlsx", ".xls", ".epub",
              ".eml", ".msg", ".vtt", ".properties"}
_IMAGES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".svg"}
_AUDIO = {".mp3", ".m4a", ".wav", ".webm", ".amr", ".mpga"}
_VIDEO = {".mp4", ".mov", ".mpeg"}


class FileReadError(ValueError):
    """A file variable's content could not be had; the message says which and why."""


def file_kind(extension: str) -> str:
    """Dify's file ``type`` for an extension."""
    ext = extension.lower()
    return ("document" if ext in _DOCUMENTS else "image" if ext in _IMAGES else
            "audio" if ext in _AUDIO else "video" if ext in _VIDEO else "custom")


def local_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Dify file object for the local file at ``path`` (resolved; it must exist)."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileReadError(f"{str(path)!r} is not a file")
    ext = file.suffix.lower()
    mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    from cellwire.services.knowledge.extract import MIME_TYPES

    return {"dify_model_identity": DIFY_FILE, "id": None, "type": file_kind(ext),
            "transfer_method": "local_file", "remote_url": None, "url": None,
            "related_id": uuid.uuid5(uuid.NAMESPACE_URL, file.as_uri()).hex,
            "filename": file.name, "extension": ext, "mime_type": MIME_TYPES.get(ext, mime),
            "size": file.stat().st_size, "path": str(file)}


def remote_file(url: str) -> dict[str, Any]:
    """A Dify file object for ``url`` (fetched when a node reads it)."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name or "file"
    ext = PurePosixPath(name).suffix.lower()
    return {"dify_model_identity": DIFY_FILE, "id": None, "type": file_kind(ext),
            "transfer_method": "remote_url", "remote_url": url, "url": url,
            "related_id": None, "filename": name, "extension": ext,
            "mime_type": mimetypes.guess_type(name)[0], "size": -1}


def describe(item: Any) -> str:
    if isinstance(item, dict):
        return repr(str(item.get("filename") or item.get("path") or item.get("remote_url")
                        or item.get("url") or item.get("related_id") or "file"))
    return repr(str(item)[:100])


async def read_file(item: Any, *, files: FilePolicy, http: HTTPService | None,
                    network: NetworkGuard | None) -> tuple[bytes, str, str | None]:
    """The bytes, file name and MIME type of the file ``item`` (a file object, a URL or a
    local path)."""
    if isinstance(item, str):
        item = remote_file(item) if item.startswith(("http://", "https://")) else \
            {"path": item, "filename": Path(item).name, "transfer_method": "local_file"}
    if not isinstance(item, dict):
        raise FileReadError(f"a {type(item).__name__} is not a file: give a file object, "
                            "a URL or a path")
    url = str(item.get("remote_url") or item.get("url") or "")
    path = str(item.get("path") or "")
    if not path and url.startswith("file://"):
        path = unquote(urlsplit(url).path)
    name = str(item.get("filename") or PurePosixPath(path or urlsplit(url).path).name)
    if not item.get("extension") and not name:
        name = "file"
    if item.get("extension") and not PurePosixPath(name).suffix:
        name += str(item["extension"])
    mime = item.get("mime_type") or None
    if path:
        return _read_local(path, files), name, mime
    if url.startswith(("http://", "https://")):
        return await _fetch(url, http, network), name, mime
    raise FileReadError(
        f"the file {describe(item)} has no path and no URL: cellwire has no copy of files "
        "uploaded to Dify; give a local path (transfer_method local_file, path: ...) or a "
        "remote_url")


def _read_local(path: str, files: FilePolicy) -> bytes:
    try:
        granted = files.check(path)
    except FileAccessDenied as exc:
        raise FileReadError(str(exc)) from None
    try:
        fd = os.open(granted, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise FileReadError(f"cannot read {path!r}: {exc.strerror or exc}") from None


async def _fetch(url: str, http: HTTPService | None, network: NetworkGuard | None) -> bytes:
    import httpx

    from cellwire.services.http import NETWORK, SHARED, AddressRefused, NetworkPolicy

    policy = network or NetworkPolicy.trusted()
    client = (http or SHARED).client()
    target = httpx.URL(url)
    try:
        await policy.addresses(target.host, target.port or (443 if target.scheme == "https"
                                                           else 80))
        request = client.build_request("GET", target)
        request.extensions = {**request.extensions, NETWORK: policy}
        response = await client.send(request, stream=True, follow_redirects=False)
        try:
            if response.status_code != 200:
                raise FileReadError(f"GET {url} answered {response.status_code}, not the file")
            limit = policy.max_binary_size
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise FileReadError(f"{url} is larger than the {limit}-byte cap on files; "
                                        "nothing more was read")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            await response.aclose()
    except AddressRefused as exc:
        raise FileReadError(f"refused to fetch {url}: {exc}") from None
    except httpx.HTTPError as exc:
        raise FileReadError(f"cannot fetch {url}: {exc or type(exc).__name__}") from None


def file_object(value: Any, files: FilePolicy | None) -> Any:
    """A start input given for a file variable, as a Dify file object: an http(s) URL or a
    local path becomes one (its size read only when the run may read the file); file
    objects and ``data:`` URLs stay as they are."""
    if not isinstance(value, str) or not value or value.startswith("data:"):
        return value  # a data: URL carries its bytes and stays as it is
    if value.startswith(("http://", "https://")):
        return remote_file(value)
    path = Path(value).expanduser()
    ext = path.suffix.lower()
    from cellwire.services.knowledge.extract import MIME_TYPES

    size = -1
    if files is not None:
        try:
            size = files.check(path).stat().st_size
        except (FileAccessDenied, OSError):
            size = -1
    # A path of no known kind keeps type None: a node decides by its content (vision sniffs
    # an image's first bytes), as it did with the bare path.
    kind = file_kind(ext)
    return {"dify_model_identity": DIFY_FILE, "id": None,
            "type": None if kind == "custom" else kind,
            "transfer_method": "local_file", "remote_url": None, "url": None,
            "related_id": uuid.uuid5(uuid.NAMESPACE_URL, str(path)).hex,
            "filename": path.name, "extension": ext,
            "mime_type": MIME_TYPES.get(ext) or mimetypes.guess_type(path.name)[0],
            "size": size, "path": value}


def system_files(value: Any, files: FilePolicy | None) -> list[Any]:
    """``sys.files`` as Dify's pool holds it: a list of file objects, paths and URLs given
    for it converted as :func:`file_object` converts a start input's."""
    items = value if isinstance(value, list) else [value]
    return [file_object(item, files) for item in items]
