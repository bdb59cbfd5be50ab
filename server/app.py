"""Assembles the gate: the FastAPI app, its lifespan (storage and auth built from settings), and
the handlers that turn every error into ``{"error": reason}``.

Nothing here handles a request itself; the routers do, through ``server.deps``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .auth import build_authenticator
from .config import Settings
from .deps import Gate
from .entries import EntryService
from .errors import GateError
from .lifecycle import Lifecycle
from .metrics import GateMetrics, RequestMetricsMiddleware
from .routers import cache, health, sessions
from .storage import make_storage
from .storage.base import StorageError, StorageUnavailable
from .storage.metered import MeteredStorage

__all__ = ["create_app", "lifespan"]

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
    storage = MeteredStorage(make_storage(settings.storage), metrics.storage)
    authenticator = build_authenticator(settings.auth)
    entries = EntryService(storage, settings.limits, settings.compression)
    app.state.gate = Gate(
        settings=settings, metrics=metrics, storage=storage, entries=entries, authenticator=authenticator
    )
    lifecycle.started = True
    try:
        yield
    finally:
        lifecycle.draining = True
        await entries.aclose()
        await authenticator.aclose()
        await storage.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
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
    _install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(sessions.router)
    app.include_router(cache.router)
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


def _install_error_handlers(app: FastAPI) -> None:
    async def gate_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GateError)
        return _error(exc.status, exc.reason, dict(exc.headers))

    async def storage_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, StorageUnavailable):
            log.warning("storage unavailable: %s %s: %s", request.method, request.url.path, exc)
            return _error(503, "storage unavailable, try again later")
        log.error("storage error: %s %s: %s", request.method, request.url.path, exc)
        return _error(500, "storage error")

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error(400, _validation_reason(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail).lower(), dict(exc.headers or {}))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the server log (Starlette re-raises it), never to the client.
        return _error(500, "internal error")

    app.add_exception_handler(GateError, gate_error)
    app.add_exception_handler(StorageError, storage_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
