"""Storage backends behind one interface (``base.Storage``), built from validated settings."""

from __future__ import annotations

from .base import Storage
from .settings import StorageSettings

__all__ = ["Storage", "StorageSettings", "make_storage"]


def make_storage(settings: StorageSettings) -> Storage:
    """The backend the settings name. Imports lazily: the gcs client is heavy and optional."""
    if settings.backend == "gcs":
        from .gcs import GCSStorage

        return GCSStorage(settings)
    from .local import LocalStorage

    return LocalStorage(settings.path, fsync=settings.fsync)
