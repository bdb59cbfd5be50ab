"""Liveness, readiness and metrics: open to anyone, as probes and scrapers carry no token."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from ..deps import Gate
from ..errors import Unavailable
from ..lifecycle import Lifecycle
from ..metrics import CONTENT_TYPE_LATEST, GateMetrics
from ..storage.base import StorageUnavailable

__all__ = ["router"]

router = APIRouter()

_CHECK_TIMEOUT_S = 5.0


@router.get("/healthz", name="healthz")
async def healthz() -> dict[str, str]:
    """Alive: answers without touching storage, so a slow bucket never gets the pod restarted."""
    return {"status": "ok"}


@router.get("/readyz", name="readyz")
async def readyz(request: Request) -> dict[str, str]:
    lifecycle: Lifecycle = request.app.state.lifecycle
    if lifecycle.draining:
        raise Unavailable("shutting down")
    if not lifecycle.started:
        raise Unavailable("starting")
    gate: Gate = request.app.state.gate
    storage = gate.storage
    try:
        await asyncio.wait_for(storage.check(), _CHECK_TIMEOUT_S)
    except StorageUnavailable as exc:
        raise Unavailable(f"storage ({storage.name}) unavailable: {exc}") from exc
    except TimeoutError as exc:
        raise Unavailable(f"storage ({storage.name}) did not answer within {_CHECK_TIMEOUT_S:g}s") from exc
    return {"status": "ready", "storage": storage.name}


@router.get("/metrics", name="metrics")
async def metrics(request: Request) -> Response:
    registry: GateMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
