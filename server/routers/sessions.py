"""The helper's calls besides the cache itself: who am I, and the report of one go invocation."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..deps import CurrentPrincipal, NamespaceReader
from ..sessions import SessionReport, record_session
from ..usage.hooks import count_session

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/whoami", name="whoami")
async def whoami(principal: CurrentPrincipal) -> dict[str, object]:
    return {"subject": principal.subject, "role": principal.role.label, "namespaces": list(principal.namespaces)}


@router.post("/v1/ns/{ns:path}/sessions", name="post_session", status_code=202)
async def post_session(request: Request, report: SessionReport, access: NamespaceReader) -> dict[str, str]:
    record_session(access.gate.metrics, access.namespace, access.principal, report)
    count_session(request, access, report)
    return {"status": "accepted"}
