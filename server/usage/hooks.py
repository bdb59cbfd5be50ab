"""The calls the cache, prefetch and session routes make into the ledger: one per answered request.

Each finds the ledger on the app, adds the request's outcome to its row, and charges the storage
operations the request made (see ``attribution``) to the same row. Job labels come from the headers
the helper sends with every request (``X-Gocachegate-Job``, ``X-Gocachegate-Job-Type``) or from the
session report; they label usage only, rights never depend on them.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from ..deps import Access
from ..entries import Hit, PutResult
from ..sessions import SessionReport
from .attribution import bind_current
from .counters import SESSION_FIELDS, Counts, Dims
from .ledger import UsageLedger

__all__ = [
    "JOB_HEADER",
    "JOB_TYPE_HEADER",
    "PrefetchUsage",
    "count_get",
    "count_prefetch",
    "count_put",
    "count_session",
]

JOB_HEADER = "x-gocachegate-job"
JOB_TYPE_HEADER = "x-gocachegate-job-type"
_JOB, _JOB_TYPE = JOB_HEADER.encode(), JOB_TYPE_HEADER.encode()
_LABEL_MAX = 128

#: Called when a prefetch stream ends: ``(entries sent, entries missing, bytes sent)``.
PrefetchUsage = Callable[[int, int, int], None]


def _label(value: str | None) -> str:
    return "" if value is None else value.strip()[:_LABEL_MAX]


def _request_dims(request: Request, access: Access) -> Dims:
    """The row of this request: one pass over the raw headers (this runs on every hit)."""
    job = job_type = ""
    for name, value in request.scope["headers"]:
        if name == _JOB:
            job = value.decode("latin-1").strip()[:_LABEL_MAX]
        elif name == _JOB_TYPE:
            job_type = value.decode("latin-1").strip()[:_LABEL_MAX]
    return Dims(access.namespace, access.principal.subject, job, job_type)


def _one_request(request: Request, access: Access) -> tuple[Dims, Counts] | None:
    """The caller's row with this request counted in it; None when the ledger is off."""
    ledger: UsageLedger = request.app.state.usage
    if not ledger.enabled:
        return None
    dims = _request_dims(request, access)
    counts = ledger.row(dims)
    counts.requests += 1
    return dims, counts


def count_get(request: Request, access: Access, hit: Hit | None) -> None:
    """A get answered: ``hit`` sent, or None for a miss (corrupt entries included)."""
    if (row := _one_request(request, access)) is None:
        return
    dims, counts = row
    if hit is None:
        counts.misses += 1
    else:
        counts.hits += 1
        counts.bytes_out += hit.length
        counts.compute_ms_saved += hit.header.compute_ms or 0
    bind_current(dims, counts)


def count_put(request: Request, access: Access, result: PutResult | None) -> None:
    """A put answered: stored, already present, or refused (None)."""
    if (row := _one_request(request, access)) is None:
        return
    dims, counts = row
    if result is None:
        counts.puts_rejected += 1
    elif result.created:
        counts.puts_new += 1
    else:
        counts.puts_present += 1
    if result is not None:
        counts.bytes_in += result.received
    bind_current(dims, counts)


def count_session(request: Request, access: Access, report: SessionReport) -> None:
    """A helper's report of one go invocation."""
    ledger: UsageLedger = request.app.state.usage
    if not ledger.enabled:
        return
    dims = _request_dims(request, access)
    if report.job_name or report.job_type:
        dims = dims._replace(job=_label(report.job_name), job_type=_label(report.job_type))
    counts = ledger.row(dims)
    counts.sessions += 1
    for name in SESSION_FIELDS:
        field = f"session_{name}"
        setattr(counts, field, getattr(counts, field) + getattr(report, name))


def count_prefetch(request: Request, access: Access) -> PrefetchUsage:
    """A prefetch stream about to start: its reads (made later, by the stream's own tasks) are charged
    to the caller from now on; the answer is called with what the stream sent once it ends.

    Each entry sent counts as a hit and each one missing as a miss. Their compute time is not added to
    ``compute_ms_saved``: the gate cannot know which prefetched entries Go will use, the helper's
    session report says (``session_compute_ms_saved``).
    """
    ledger: UsageLedger = request.app.state.usage
    if not ledger.enabled:
        return lambda sent, missing, sent_bytes: None
    dims = _request_dims(request, access)
    ledger.charge_context(dims)

    def done(sent: int, missing: int, sent_bytes: int) -> None:
        counts = ledger.row(dims)
        counts.requests += 1
        counts.hits += sent
        counts.misses += missing
        counts.bytes_out += sent_bytes

    return done
