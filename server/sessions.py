"""Sessions: what a helper reports about one go invocation, and what the gate does with it.

Today the counters are added to Prometheus per namespace; the usage ledger hooks into
``record_session`` to attribute them per subject and job as well. Rights never come from a
report: the job fields are labels for reports only.

A report may name entries whose bodies failed the helper's digest check (``corrupt_actions``).
The gate reads each one again and removes it only if its own check fails too, so a stored entry
that went bad stops costing every job a miss (puts are create-only: a good put would never
replace it), while a report can never remove a good entry.
"""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, StringConstraints

from .entries import EntryService
from .identity import Principal
from .metrics import GateMetrics
from .storage.base import StorageError

__all__ = ["COUNTER_FIELDS", "MAX_REPORTED_CORRUPT", "SessionReport", "check_reported", "record_session"]

log = logging.getLogger("gocachegate.sessions")

_Label = Annotated[str, StringConstraints(max_length=256)] | None
_ActionId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: Entries one report may ask the gate to check (each costs one storage read).
MAX_REPORTED_CORRUPT = 64


class SessionReport(BaseModel):
    """The helper's counters (its stats file) plus optional job metadata; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    gets: NonNegativeInt = 0
    hits: NonNegativeInt = 0
    misses: NonNegativeInt = 0
    local_hits: NonNegativeInt = 0
    remote_hits: NonNegativeInt = 0
    puts: NonNegativeInt = 0
    uploads: NonNegativeInt = 0
    upload_errors: NonNegativeInt = 0
    uploads_dropped: NonNegativeInt = 0
    remote_errors: NonNegativeInt = 0
    corrupt: NonNegativeInt = 0
    bytes_downloaded: NonNegativeInt = 0
    bytes_uploaded: NonNegativeInt = 0
    remote_wait_ms: NonNegativeInt = 0
    compute_ms_saved: NonNegativeInt = 0
    duration_ms: NonNegativeInt = 0
    # the streamed prefetch (docs/prefetch.md)
    prefetched: NonNegativeInt = 0
    prefetch_hits: NonNegativeInt = 0
    prefetch_bytes: NonNegativeInt = 0
    prefetch_wasted: NonNegativeInt = 0
    manifests_sent: NonNegativeInt = 0

    job_name: _Label = None
    job_type: _Label = None
    build_id: _Label = None
    repo_owner: _Label = None
    repo_name: _Label = None
    pull_number: Annotated[_Label, Field(coerce_numbers_to_str=True)] = None
    helper_version: _Label = None
    corrupt_actions: list[_ActionId] = Field(default_factory=list, max_length=MAX_REPORTED_CORRUPT)


COUNTER_FIELDS: tuple[str, ...] = tuple(
    name for name, info in SessionReport.model_fields.items() if info.annotation is int
)


def record_session(metrics: GateMetrics, namespace: str, principal: Principal, report: SessionReport) -> None:
    """Account one reported session (the usage ledger extends this)."""
    metrics.sessions(namespace).inc()
    for name in COUNTER_FIELDS:
        value = getattr(report, name)
        if value:
            metrics.session_counts(namespace, name).inc(value)


async def check_reported(entries: EntryService, metrics: GateMetrics, namespace: str, actions: list[str]) -> None:
    """Check the entries a report says were corrupt; remove (and count) those that are. Runs after
    the answer; a storage failure leaves the rest for a later report."""
    for action in dict.fromkeys(actions):
        try:
            whole = await entries.verify(namespace, action)
        except StorageError as exc:
            log.info("could not check reported entry %s/%s: %s", namespace, action, exc)
            return
        if whole is False:
            metrics.corrupt(namespace).inc()
