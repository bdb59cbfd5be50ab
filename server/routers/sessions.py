"""The helper's calls besides the cache itself: who am I, and the report of one go invocation."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request

from ..deps import CurrentPrincipal, NamespaceReader
from ..sessions import SessionReport, check_reported, record_session
from ..usage.hooks import count_session

__all__ = ["router"]

router = APIRouter()


@router.get("/v1/whoami", name="whoami")
async def whoami(principal: CurrentPrincipal) -> dict[str, object]:
    return {"subject": principal.subject, "role": principal.role.label, "namespaces": list(principal.namespaces)}


@router.post("/v1/ns/{ns:path}/sessions", name="post_session", status_code=202)
async def post_session(request: Request, report: SessionReport, access: NamespaceReader,
                       background: BackgroundTasks) -> dict[str, str]:
    gate = access.gate
    record_session(gate.metrics, access.namespace, access.principal, report)
    count_session(request, access, report)
    if report.corrupt_actions:
        background.add_task(check_reported, gate.entries, gate.metrics, access.namespace, report.corrupt_actions)
    return {"status": "accepted"}
