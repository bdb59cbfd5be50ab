"""The admin API (``/v1/admin/...``): what is in the cache, who uses it, what it costs. Admins only.

Thin on purpose: parse, call the inventory, the ledger or the cost report, shape the answer. Bad
input is 400 with the reason (a malformed time or duration, a limit out of range, a page token
from elsewhere); an unknown namespace is an empty answer, not an error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ..cost.html import to_html
from ..cost.render import CONTENT_TYPES, to_csv, to_markdown
from ..cost.report import CostReport, make_report
from ..deps import AdminPrincipal, GateDep
from ..errors import BadRequest
from ..inventory import EntryInfo, EntryPage, Inventory, ManifestDetail, ManifestPage, PurgeResult, Stats
from ..timespec import parse_duration, parse_instant, rfc3339
from ..usage.counters import Counts
from ..usage.ledger import UsageLedger
from ..usage.query import parse_group_by
from ..usage.segments import compact

__all__ = ["CompactRequest", "CompactResult", "PurgeRequest", "UsageReport", "UsageRow", "router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_DEFAULT_SINCE = "30d"


async def _ledger(request: Request) -> UsageLedger:
    ledger: UsageLedger = request.app.state.usage
    return ledger


Ledger = Annotated[UsageLedger, Depends(_ledger)]


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(default=None, description="only this namespace (default: all)")
    older_than: str | None = Field(default=None, description="only entries not used for this long, e.g. 7d or 12h")
    prefix: str = Field(default="", description="only action ids starting with these hex digits")
    dry_run: bool = Field(default=False, description="count what would go, delete nothing")
    page_token: str | None = Field(default=None, description="go on from an earlier answer's next_page_token")
    limit: int | None = Field(default=None, ge=1, le=10_000_000, description="look at this many entries at most")


class UsageRow(BaseModel):
    """One group's counts; the dimensions not grouped by are null."""

    namespace: str | None = None
    subject: str | None = None
    job: str | None = None
    job_type: str | None = None
    hour: str | None = None
    day: str | None = None
    requests: int = 0
    hits: int = 0
    misses: int = 0
    hit_ratio: float | None = Field(default=None, description="hits / (hits + misses)")
    puts: int = Field(default=0, description="puts_new + puts_present + puts_rejected")
    puts_new: int = 0
    puts_present: int = 0
    puts_rejected: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    compute_ms_saved: int = 0
    ops_a: int = Field(default=0, description="storage operations billed as Class A")
    ops_b: int = Field(default=0, description="storage operations billed as Class B")
    ops_free: int = 0
    sessions: int = 0
    session_gets: int = 0
    session_hits: int = 0
    session_local_hits: int = 0
    session_remote_hits: int = 0
    session_misses: int = 0
    session_puts: int = 0
    session_uploads: int = 0
    session_bytes_downloaded: int = 0
    session_bytes_uploaded: int = 0
    session_remote_wait_ms: int = 0
    session_compute_ms_saved: int = 0
    session_duration_ms: int = 0

    @classmethod
    def of(cls, group: dict[str, str], counts: Counts) -> UsageRow:
        gets = counts.hits + counts.misses
        return cls.model_validate(
            {
                **group,
                **counts.to_json(),
                "puts": counts.puts_new + counts.puts_present + counts.puts_rejected,
                "hit_ratio": counts.hits / gets if gets else None,
            }
        )


class UsageReport(BaseModel):
    since: str
    until: str
    group_by: list[str]
    rows: list[UsageRow]
    totals: UsageRow


class CompactRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    older_than: str = Field(default="7d", description="compact whole days older than this (at least 2d)")


class CompactResult(BaseModel):
    days: int = Field(description="day objects written")
    segments: int = Field(description="hour segments folded in and deleted")


def _instant(text: str, now: datetime, what: str) -> datetime:
    try:
        return parse_instant(text, now)
    except ValueError as exc:
        raise BadRequest(f"{what}: {exc}") from exc


def _range(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start = _instant(since or _DEFAULT_SINCE, now, "since")
    end = _instant(until or "now", now, "until")
    if end <= start:
        raise BadRequest("until must be later than since")
    return start, end


@router.get("/stats", name="admin_stats", response_model=Stats)
async def stats(gate: GateDep, _: AdminPrincipal) -> Stats:
    return await Inventory(gate.storage).stats()


@router.get("/entries", name="admin_entries", response_model=EntryPage)
async def entries(
    gate: GateDep,
    _: AdminPrincipal,
    ns: Annotated[str | None, Query(description="only this namespace")] = None,
    prefix: Annotated[str, Query(description="only action ids starting with these hex digits")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: str | None = None,
) -> EntryPage:
    return await Inventory(gate.storage).entries(ns, prefix, limit, page_token)


@router.get("/entries/{ns}/{action}", name="admin_entry", response_model=EntryInfo)
async def entry(ns: str, action: str, gate: GateDep, _: AdminPrincipal) -> EntryInfo:
    return await Inventory(gate.storage).get(ns, action)


@router.delete("/entries/{ns}/{action}", name="admin_delete_entry", status_code=204, response_class=Response)
async def delete_entry(ns: str, action: str, gate: GateDep, _: AdminPrincipal) -> Response:
    await Inventory(gate.storage).delete(ns, action)
    return Response(status_code=204)


@router.get("/manifests", name="admin_manifests", response_model=ManifestPage)
async def manifests(
    gate: GateDep,
    _: AdminPrincipal,
    ns: Annotated[str | None, Query(description="only this namespace")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: str | None = None,
) -> ManifestPage:
    return await Inventory(gate.storage).manifests(ns, limit, page_token)


@router.get("/manifests/{ns}/{key}", name="admin_manifest", response_model=ManifestDetail)
async def manifest(ns: str, key: str, gate: GateDep, _: AdminPrincipal) -> ManifestDetail:
    return await Inventory(gate.storage).manifest(ns, key)


@router.delete("/manifests/{ns}/{key}", name="admin_delete_manifest", status_code=204, response_class=Response)
async def delete_manifest(ns: str, key: str, gate: GateDep, _: AdminPrincipal) -> Response:
    await Inventory(gate.storage).delete_manifest(ns, key)
    return Response(status_code=204)


@router.post("/purge", name="admin_purge", response_model=PurgeResult)
async def purge(body: PurgeRequest, gate: GateDep, _: AdminPrincipal) -> PurgeResult:
    try:
        older_than = None if body.older_than is None else parse_duration(body.older_than)
    except ValueError as exc:
        raise BadRequest(f"older_than: {exc}") from exc
    return await Inventory(gate.storage).purge(
        namespace=body.namespace,
        older_than=older_than,
        prefix=body.prefix,
        dry_run=body.dry_run,
        page_token=body.page_token,
        limit=body.limit,
    )


@router.get("/usage", name="admin_usage", response_model=UsageReport)
async def usage(
    ledger: Ledger,
    _: AdminPrincipal,
    since: Annotated[str | None, Query(description="now, 7d (ago), a date or RFC 3339; default 30d")] = None,
    until: Annotated[str | None, Query(description="default now")] = None,
    group_by: Annotated[str, Query(description="namespace, subject, job, job_type, hour, day; comma-joined")] = (
        "namespace"
    ),
) -> UsageReport:
    start, end = _range(since, until)
    try:
        groups = parse_group_by(group_by)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    [table] = await ledger.read(start, end, groups)
    return UsageReport(
        since=rfc3339(table.since),
        until=rfc3339(table.until),
        group_by=list(groups),
        rows=[UsageRow.of(group, counts) for group, counts in table.sorted_rows()],
        totals=UsageRow.of({}, table.totals),
    )


@router.post("/usage/compact", name="admin_compact_usage", response_model=CompactResult)
async def compact_usage(body: CompactRequest, gate: GateDep, _: AdminPrincipal) -> CompactResult:
    try:
        before = datetime.now(UTC) - parse_duration(body.older_than)
        done = await compact(gate.storage, before)
    except ValueError as exc:
        raise BadRequest(f"older_than: {exc}") from exc
    return CompactResult(days=done.days, segments=done.segments)


@router.get(
    "/cost-report",
    name="admin_cost_report",
    response_model=CostReport,
    responses={200: {"content": {CONTENT_TYPES[f]: {} for f in ("csv", "markdown", "html")}}},
)
async def cost_report(
    gate: GateDep,
    ledger: Ledger,
    _: AdminPrincipal,
    since: Annotated[str | None, Query(description="default 30d (ago)")] = None,
    until: Annotated[str | None, Query(description="default now")] = None,
    format: Literal["json", "csv", "markdown", "html"] = "json",
    group_by: Literal["namespace", "job"] = "namespace",
) -> CostReport | Response:
    start, end = _range(since, until)
    report = await make_report(
        ledger, gate.storage, since=start, until=end, group_by=group_by, prices=gate.settings.prices
    )
    if format == "json":
        return report
    text = {"csv": to_csv, "markdown": to_markdown, "html": to_html}[format](report)
    return Response(text, media_type=CONTENT_TYPES[format])


@router.get("/openapi.json", name="admin_openapi", include_in_schema=False)
async def openapi(request: Request, _: AdminPrincipal) -> dict[str, object]:
    """The gate's OpenAPI schema (the public ``/openapi.json`` is off: the API is not for browsing)."""
    schema: dict[str, object] = request.app.openapi()
    return schema
