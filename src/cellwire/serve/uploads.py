"""Files uploaded with ``POST /v1/files/upload``, kept in one folder that served runs may read.

Each upload is ``<id><ext>`` with a ``<id>.json`` record beside it, so every worker process of
a server (``--workers N``) finds the uploads of the others. A run's inputs name an upload by
``upload_file_id``; served runs read no other local file.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
import uuid
from pathlib import Path
from typing import Any

from cellwire.services.files.objects import DIFY_FILE, file_kind

#: Dify's default cap on an uploaded file (UPLOAD_FILE_SIZE_LIMIT, 15 MB).
MAX_UPLOAD = 15 * 1024 * 1024


class Uploads:
    """The upload folder of a server."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def save(self, filename: str, data: bytes, *, user: str, mime_type: str | None) -> dict[str, Any]:
        """Keep ``data``; returns Dify's upload answer (id, name, size, extension, ...)."""
        file_id = str(uuid.uuid4())
        name = Path(filename or "file").name or "file"
        ext = Path(name).suffix.lower()
        (self.folder / f"{file_id}{ext}").write_bytes(data)
        record = {"id": file_id, "name": name, "size": len(data), "extension": ext.lstrip("."),
                  "mime_type": mime_type or mimetypes.guess_type(name)[0]
                  or "application/octet-stream",
                  "created_by": user, "created_at": int(time.time())}
        (self.folder / f"{file_id}.json").write_text(json.dumps(record))
        return record

    def get(self, file_id: str) -> dict[str, Any] | None:
        """The record of upload ``file_id``, or None."""
        try:
            uuid.UUID(file_id)
            return dict(json.loads((self.folder / f"{file_id}.json").read_text()))
        except (ValueError, OSError):
            return None

    def file_object(self, file_id: str) -> dict[str, Any] | None:
        """Upload ``file_id`` as the Dify file object a run's input holds, or None."""
        record = self.get(file_id)
        if record is None:
            return None
        ext = "." + record["extension"] if record["extension"] else ""
        return {"dify_model_identity": DIFY_FILE, "id": file_id, "type": file_kind(ext),
                "transfer_method": "local_file", "remote_url": None, "url": None,
                "related_id": file_id, "filename": record["name"], "extension": ext,
                "mime_type": record["mime_type"], "size": record["size"],
                "path": str(self.folder / f"{file_id}{ext}")}


__all__ = ["MAX_UPLOAD", "Uploads"]
