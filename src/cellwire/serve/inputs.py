"""A served run's inputs, checked against the start node's variables before the run starts.

The messages are Dify's (``api/core/app/apps/base_app_generator.py``), answered as 400
``invalid_param`` naming the field. File inputs may be remote URLs or uploads
(``upload_file_id``); a served run never reads a local path a request names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cellwire.nodes.start import StartVariable

from .apps import ServedApp
from .errors import ServeError
from .uploads import Uploads

_TEXT = ("text-input", "paragraph", "select")


def invalid(message: str) -> ServeError:
    return ServeError(400, "invalid_param", message)


def check_inputs(app: ServedApp, given: Mapping[str, Any], uploads: Uploads) -> dict[str, Any]:
    """The inputs to run ``app`` with; ServeError 400 naming the first field that is wrong."""
    inputs: dict[str, Any] = {}
    for var in app.start_variables():
        value = given.get(var.variable)
        if value is None or value == "":
            if var.required and var.default in (None, ""):
                raise invalid(f"{var.variable} is required in input form")
            continue
        inputs[var.variable] = _checked(var, value, uploads)
    # Names the start node does not declare pass through (Dify keeps them in the pool), but
    # never as file objects pointing at local paths.
    for name, value in given.items():
        if name not in inputs and not name.startswith("sys.") and value is not None:
            if _names_local_path(value):
                raise invalid(f"{name} names a local file; upload it (POST /v1/files/upload) "
                              "and pass its upload_file_id")
            inputs.setdefault(name, value)
    return inputs


def _checked(var: StartVariable, value: Any, uploads: Uploads) -> Any:
    name = var.variable
    if var.type in _TEXT:
        if not isinstance(value, str):
            raise invalid(f"{name} in input form must be a string")
        if var.type == "select" and var.options and value not in var.options:
            raise invalid(f"{name} in input form must be one of the following: {var.options}")
        if var.max_length and len(value) > var.max_length:
            raise invalid(f"{name} in input form must be less than {var.max_length} characters")
        return value
    if var.type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise invalid(f"{name} in input form must be a valid number")
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                raise invalid(f"{name} in input form must be a valid number") from None
        return value
    if var.type == "checkbox":
        if not isinstance(value, bool):
            raise invalid(f"{name} in input form must be a boolean")
        return value
    if var.type == "json_object":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise invalid(f"{name} in input form must be a JSON object") from None
        if not isinstance(value, dict):
            raise invalid(f"{name} in input form must be a JSON object")
        return value
    if var.type == "file":
        if isinstance(value, list):
            raise invalid(f"{name} in input form must be a file")
        return file_input(name, value, uploads)
    if var.type == "file-list":
        if not isinstance(value, list):
            raise invalid(f"{name} in input form must be a list of files")
        return [file_input(name, item, uploads) for item in value]
    return value


def file_input(name: str, value: Any, uploads: Uploads) -> Any:
    """One file as a request gives it (Dify's ``{type, transfer_method, url|upload_file_id}``
    or an http(s) URL), as the file object the run reads; 400 for anything else."""
    if isinstance(value, str):
        if value.startswith(("http://", "https://")):
            return value
        raise invalid(f"{name} in input form must be a file: an http(s) URL or "
                      "{transfer_method: remote_url|local_file, url|upload_file_id}; "
                      "served runs read no local paths")
    if not isinstance(value, dict):
        raise invalid(f"{name} in input form must be a file")
    method = value.get("transfer_method")
    if method == "remote_url":
        url = value.get("url") or value.get("remote_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid(f"{name}: a remote_url file needs an http(s) url")
        return url
    if method == "local_file":
        file_id = value.get("upload_file_id")
        found = uploads.file_object(file_id) if isinstance(file_id, str) else None
        if found is None:
            raise invalid(f"{name}: upload_file_id {file_id!r} names no uploaded file; upload "
                          "it first (POST /v1/files/upload)")
        return found
    raise invalid(f"{name}: transfer_method must be remote_url or local_file, not {method!r}")


def _names_local_path(value: Any) -> bool:
    if isinstance(value, dict):
        return "path" in value
    if isinstance(value, list):
        return any(_names_local_path(item) for item in value)
    return False


def request_files(files: Any, uploads: Uploads) -> list[Any]:
    """The request's top-level ``files`` (Dify's ``sys.files``), checked like file inputs."""
    if files is None:
        return []
    if not isinstance(files, list):
        raise invalid("files must be a list of files")
    return [file_input("files", item, uploads) for item in files]


__all__ = ["check_inputs", "file_input", "invalid", "request_files"]
