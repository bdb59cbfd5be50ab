"""The ``storage:`` section of the gate's config: one optional group of keys per backend."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["StorageSettings"]


class StorageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "gcs"] = "local"

    # local
    path: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" / "gocachegate")
    fsync: bool = True  # flush each object to disk before it becomes visible; off trades durability for speed

    # gcs
    bucket: str | None = None
    prefix: str = ""
    project: str | None = None  # else GOOGLE_CLOUD_PROJECT; spares google-auth a project lookup
    threads: int = Field(default=32, ge=1, le=512)  # google-cloud-storage is blocking: calls run here
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)  # no storage call outlives this

    @model_validator(mode="after")
    def _backend_needs(self) -> StorageSettings:
        if self.backend == "gcs" and not self.bucket:
            raise ValueError("storage.bucket is required with backend: gcs")
        if self.prefix and (self.prefix.startswith("/") or ".." in self.prefix.split("/")):
            raise ValueError("storage.prefix must be a relative object name prefix")
        return self
