"""What the ledger counts, and by what.

A row of the ledger is one ``Dims`` (namespace, subject, job name, job type) in one hour, holding a
``Counts``. The gate's own work that no request caused (ledger writes, admin listings, readiness
probes) is counted under ``GATE_DIMS``, so the cost of running the gate shows as a row of its own
and the rows always add up to what storage was asked to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final, NamedTuple

__all__ = ["FIELDS", "GATE", "GATE_DIMS", "OP_FIELD", "OTHER", "SESSION_FIELDS", "Counts", "Dims"]

#: The label of what the gate does on its own account.
GATE: Final = "(gate)"
#: The label that rows beyond ``usage.max_rows_per_hour`` are folded into.
OTHER: Final = "(other)"


class Dims(NamedTuple):
    """A tuple: made and hashed on every request, in C."""

    namespace: str
    subject: str
    job: str  # Prow's JOB_NAME (X-Gocachegate-Job, or the session report's job_name); "" if none
    job_type: str  # presubmit, postsubmit, periodic, batch; "" if none


GATE_DIMS: Final = Dims(GATE, GATE, "", "")


@dataclass(slots=True)
class Counts:
    """Counters of one row. Every field is a non-negative integer that adds across replicas."""

    # cache requests as the gate answered them
    requests: int = 0  # gets and puts
    hits: int = 0
    misses: int = 0  # corrupt entries (answered as misses) included
    puts_new: int = 0  # stored
    puts_present: int = 0  # already there: nothing written
    puts_rejected: int = 0  # 4xx: bad digest, size, too large, disconnected
    bytes_in: int = 0  # put bodies received, as on the wire
    bytes_out: int = 0  # hit bodies sent, as on the wire
    compute_ms_saved: int = 0  # the compute time recorded with each entry a hit served
    # storage operations by GCS class (see server/storage/metered.py), whatever their outcome
    ops_a: int = 0
    ops_b: int = 0
    ops_free: int = 0
    # the helpers' session reports (one per go invocation)
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

    def add(self, other: Counts) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_json(self) -> dict[str, int]:
        """The fields that are not zero (segments stay small)."""
        return {name: value for name in FIELDS if (value := getattr(self, name))}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Counts:
        """Counts from a segment; unknown fields (from a newer gate) are ignored, bad values refused."""
        counts = cls()
        for name in FIELDS:
            value = data.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"bad counter {name}: {value!r}")
            setattr(counts, name, value)
        return counts


FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(Counts))
#: The session report's counters the ledger keeps, as ``session_<name>``.
SESSION_FIELDS: Final[tuple[str, ...]] = tuple(
    name.removeprefix("session_") for name in FIELDS if name.startswith("session_")
)
#: The ``Counts`` field of each storage operation class.
OP_FIELD: Final[Mapping[str, str]] = {"A": "ops_a", "B": "ops_b", "free": "ops_free"}
