"""The Service API's routes, a module per area; :func:`routers` lists them for ``create_app``."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    """Every router of the Service API, mounted under ``/v1``."""
    from . import chat, files, forms, info, workflows

    return [workflows.router, chat.router, info.router, files.router, forms.router]


__all__ = ["routers"]
