"""Errors a served request answers with, in the shape of Dify's Service API."""

from __future__ import annotations

from typing import Any


class ServeError(Exception):
    """An HTTP error answered as Dify does: ``{"code": ..., "message": ..., "status": ...}``.

    ``code`` is Dify's machine-readable error code (``invalid_param``, ``unauthorized``,
    ``not_found``, ``too_many_requests``, ...); ``headers`` carries e.g. ``Retry-After``.
    """

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body Dify sends for this error."""
        return {"code": self.code, "message": self.message, "status": self.status}
