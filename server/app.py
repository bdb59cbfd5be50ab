"""Assembles the gate: the FastAPI app, its lifespan (storage and auth built from settings), and
the handlers that turn every error into ``{"error": reason}``.

Nothing here handles a request itself; the routers do, through ``server.deps``. One route is
dispatched here rather than by FastAPI: ``GET /v1/ns/{ns}/actions/{action}``, the hit path. Its
own work for a small entry (auth, one storage read, the frame, the response) is about 25 µs of
CPU; FastAPI's middleware stack, routing and dependency solving added about 50 more (measured
with wrk: ~77 µs of server CPU per 4 KB hit through FastAPI, the same as an empty FastAPI route).
``GateApp`` matches that one path first and calls the same handler, error mapping and request
metrics the rest of the app uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .auth import build_authenticator
from .config import Settings
from .deps import Gate
from .entries import EntryService
from .errors import GateError
from .lifecycle import Lifecycle
from .metrics import GateMetrics, RequestMetricsMiddleware
from .routers import admin, cache, health, manifests, sessions
from .storage import make_storage
from .storage.base import StorageError, StorageUnavailable
from .storage.hot import with_hot_tier
from .storage.metered import MeteredStorage
from .usage.ledger import UsageLedger

__all__ = ["GateApp", "create_app", "error_response", "lifespan"]

log = logging.getLogger("gocachegate")


def _version() -> str:
    try:
        return version("gocachegate")
    except PackageNotFoundError:
        return "0+unknown"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build storage, auth and the entry service; on the way out, drain and close them.

    Startup errors (an unusable storage path, say) propagate: the CLI prints them as one line.
    """
    settings: Settings = app.state.settings
    metrics: GateMetrics = app.state.metrics
    lifecycle: Lifecycle = app.state.lifecycle
    usage = app.state.usage = UsageLedger(settings.usage)
    storage = MeteredStorage(usage.attribute(make_storage(settings.storage)), metrics.storage)
    authenticator = build_authenticator(settings.auth)
    entries = EntryService(with_hot_tier(storage, settings.hot_tier, metrics.registry), settings.limits,
                           settings.compression)
    app.state.gate = Gate(
        settings=settings, metrics=metrics, storage=storage, entries=entries, authenticator=authenticator
    )
    await usage.start(storage)
    lifecycle.started = True
    try:
        yield
    finally:
        lifecycle.draining = True
        await entries.aclose()
        await usage.aclose()
        await authenticator.aclose()
        await storage.aclose()


class GateApp(FastAPI):
    """The FastAPI app, with the hit path served ahead of FastAPI's own dispatch (see the module docstring)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            match = cache.HIT_PATH.fullmatch(scope["path"])
            if match is not None:
                await self._serve_hit(scope, receive, send, match.groupdict())
                return
        await super().__call__(scope, receive, send)

    async def _serve_hit(self, scope: Scope, receive: Receive, send: Send, path_params: dict[str, str]) -> None:
        started = time.perf_counter()
        scope["app"] = self
        scope["path_params"] = path_params
        request = Request(scope, receive)
        try:
            response = await cache.get_entry(request)
        except Exception as exc:  # every error becomes an answer, as in the routes
            if not isinstance(exc, GateError | StorageError):
                log.error("unexpected error: GET %s", scope["path"], exc_info=exc)
            response = await error_response(request, exc)
        try:
            await response(scope, receive, send)
        finally:
            metrics: GateMetrics = self.state.metrics
            metrics.count_request("get_entry", response.status_code, time.perf_counter() - started)


def create_app(settings: Settings | None = None) -> GateApp:
    app = GateApp(
        title="gocachegate",
        version=_version(),
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings or Settings()
    app.state.metrics = GateMetrics()
    app.state.lifecycle = Lifecycle()
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    for error in (GateError, StorageError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(error, error_response)
    app.include_router(cache.router)
    app.include_router(sessions.router)
    app.include_router(manifests.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    return app


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _validation_reason(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "bad request"
    first = errors[0]
    loc = ".".join(str(part) for part in first.get("loc", ()) if not isinstance(part, int))
    message = "invalid JSON" if first.get("type") == "json_invalid" else str(first.get("msg", "invalid"))
    return f"{loc}: {message}" if loc else message


async def error_response(request: Request, exc: Exception) -> Response:
    """The answer to any error: ``{"error": reason}`` with its status, never a traceback.

    Registered as the app's handler for every error type, and called by the hit path directly.
    """
    if isinstance(exc, GateError):
        return _error(exc.status, exc.reason, dict(exc.headers))
    if isinstance(exc, StorageUnavailable):
        log.warning("storage unavailable: %s %s: %s", request.method, request.url.path, exc)
        return _error(503, "storage unavailable, try again later")
    if isinstance(exc, StorageError):
        log.error("storage error: %s %s: %s", request.method, request.url.path, exc)
        return _error(500, "storage error")
    if isinstance(exc, RequestValidationError):
        return _error(400, _validation_reason(exc))
    if isinstance(exc, HTTPException):
        return _error(exc.status_code, str(exc.detail).lower(), dict(exc.headers or {}))
    # A bug. Its traceback goes to the server log: FastAPI's ServerErrorMiddleware re-raises it
    # after this answer, and the hit path logs it itself.
    return _error(500, "internal error")
