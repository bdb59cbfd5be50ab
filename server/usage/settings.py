"""The ``usage:`` section of the gate's config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["UsageSettings"]


class UsageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # off: nothing is counted or flushed (reports then show storage costs only)
    # How often each replica writes its counts; also the most a report lags behind another replica.
    flush_seconds: float = Field(default=60.0, ge=1, le=3600)
    # Rows (namespace, subject, job, job type) one replica keeps per hour. Job names come from request
    # headers any reader can set, so past this bound new combinations count as one "(other)" row per
    # namespace instead of growing memory and segments without end.
    max_rows_per_hour: int = Field(default=10_000, ge=10, le=1_000_000)
