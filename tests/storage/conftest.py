"""Backends under test, built through the factory from settings as the gate builds them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from server.storage import Storage, StorageSettings, make_storage
from tests.emulator import Emulator, gcs_emulator, start_emulator

__all__ = ["gcs_emulator"]

BACKENDS = ["local", pytest.param("gcs", marks=pytest.mark.gcs)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[Emulator]:
    """One emulator for the storage tests; each test writes under a prefix of its own."""
    with start_emulator() as emulator:
        yield emulator


def gcs_settings(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, **extra: object) -> StorageSettings:
    """Settings for the gcs backend on ``emulator`` with anonymous credentials, under a fresh prefix."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    values: dict[str, object] = {
        "backend": "gcs",
        "bucket": emulator.bucket,
        "prefix": f"test-{uuid.uuid4().hex[:12]}",
        "timeout_seconds": 5,
        "threads": 8,
    }
    values.update(extra)
    return StorageSettings.model_validate(values)


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Storage]:
    if request.param == "gcs":
        settings = gcs_settings(request.getfixturevalue("shared_emulator"), monkeypatch)
    else:
        settings = StorageSettings(backend="local", path=tmp_path / "store")
    backend = make_storage(settings)
    try:
        yield backend
    finally:
        await backend.aclose()
