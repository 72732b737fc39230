"""The Service API as an ASGI app: ``create_app(apps, store=..., guard=...)``.

Every route is under ``/v1``, with Dify's paths, fields and status codes; errors are answered
in Dify's shape (``{code, message, status}``), FastAPI's own 422s included (as 400
``invalid_param``). ``/openapi.json`` describes it and ``/docs`` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cellwire.engine import Runtime
from cellwire.runner import Runner
from cellwire.services.files import FolderPolicy
from cellwire.services.http.guard import NetworkPolicy
from cellwire.store import RunStore
from cellwire.store.conversations import Conversations

from .apps import ServedApp
from .errors import ServeError
from .graphql import graphql_router
from .limits import BodyLimit
from .principal import Guard
from .remote import DaskRuns
from .routes import routers
from .runs import RunManager
from .state import ServeState
from .triggers import Scheduler, webhook_router
from .uploads import Uploads

#: The largest request body (bytes): an upload of Dify's 15 MB and its multipart framing.
MAX_BODY = 16 * 1024 * 1024

#: Seconds a stopping server waits for its running runs to end (stopped) and be stored.
SHUTDOWN_GRACE = 10.0


def serve_runner(store: RunStore, uploads: Uploads, *,
                 allow_private_network: bool = False) -> Runner:
    """The runner of a server's runs: they keep to public addresses (unless
    ``allow_private_network``), read no local file but uploads, and are stored in ``store``."""
    network = NetworkPolicy.trusted() if allow_private_network else NetworkPolicy.untrusted()
    base = Runtime(network=network, files=FolderPolicy(uploads.folder))
    return Runner(runtime=base, store=store, files=None)


def create_app(apps: Mapping[str, ServedApp], *, store: RunStore, guard: Guard,
               trust: bool = False, allow_private_network: bool = False,
               uploads: str | os.PathLike[str] | None = None,
               runner: Runner | None = None, max_body: int | None = MAX_BODY,
               dask: str | None = None) -> FastAPI:
    """The FastAPI app serving ``apps``: runs stored in ``store``, callers checked by
    ``guard``. ``trust``: the apps' files are trusted (code runs unsandboxed, as they were
    loaded); ``uploads``: the folder of uploaded files (default: beside the store);
    ``max_body``: the largest request body in bytes (413 beyond; None: no limit); ``dask``:
    the address of a Dask scheduler whose workers run the runs (they must see the store)."""
    if not apps:
        raise ValueError("create_app needs at least one app to serve")
    folder = Uploads(uploads if uploads is not None else Path(f"{store.path}.uploads"))
    runner = runner or serve_runner(store, folder, allow_private_network=allow_private_network)
    remote = None if dask is None else DaskRuns(
        dask, db=os.fspath(store.path), uploads=str(folder.folder),
        allow_private_network=allow_private_network)
    runs = RunManager(runner, store, trust=trust, dask=remote)
    state = ServeState(dict(apps), guard, runs, store, folder, Conversations(store.path))

    async def start_run(app: str, inputs: dict[str, Any]) -> str:
        """How triggers start a run: off the request path, like any other."""
        return runs.start(state.apps[app], inputs, user="trigger").run_id

    async def save_file(name: str, data: bytes, mime_type: str | None) -> dict[str, Any]:
        record = await asyncio.to_thread(folder.save, name, data, user="webhook",
                                         mime_type=mime_type)
        return folder.file_object(record["id"]) or record

    scheduler = Scheduler(state.apps, start_run)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with _one_scheduler(store.path) as scheduling:
            if scheduling:
                scheduler.start()
            yield
            await scheduler.stop()
        await _stop_running(runs)
        if remote is not None:
            await remote.close()

    app = FastAPI(title="cellwire Service API", version="1",
                  description="Dify-compatible Service API over cellwire workflows",
                  lifespan=lifespan)
    app.state.serve = state
    app.state.guard = guard
    for router in routers():
        app.include_router(router, prefix="/v1")
    app.include_router(graphql_router(guard, store, state.apps), prefix="/graphql")
    app.include_router(webhook_router(state.apps, start_run, save_file=save_file))
    if max_body is not None:
        app.add_middleware(BodyLimit, max_bytes=max_body)
    _handlers(app)
    return app


@contextlib.contextmanager
def _one_scheduler(db: str | os.PathLike[str]) -> Iterator[bool]:
    """True in the one process of a server (``--workers N`` share the store) that runs the
    scheduled triggers: the one holding the lock file beside the store."""
    with open(f"{os.fspath(db)}.scheduler.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def _stop_running(runs: RunManager) -> None:
    """Stop the runs still going, and let them be stored as stopped."""
    running = runs.running()
    for run in running:
        runs.stop(run.run_id)
    if running:
        await asyncio.wait([asyncio.ensure_future(r.wait()) for r in running],
                           timeout=SHUTDOWN_GRACE)


def _error(status: int, code: str, message: str,
           headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ServeError(status, code, message).body(), status_code=status,
                        headers=dict(headers or {}))


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "file_too_large", 415: "unsupported_media_type",
               429: "too_many_requests"}


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "invalid_param", _validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal_server_error",
                      f"The server encountered an internal error: {type(exc).__name__}")


def _validation_message(errors: Any) -> str:
    """FastAPI's validation errors as one line naming each field (``body.inputs: ...``)."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


__all__ = ["MAX_BODY", "SHUTDOWN_GRACE", "create_app", "serve_runner"]
