"""Real gate processes with static tokens for each role, on the local backend or on a GCS emulator,
and helpers to fill them and to age their entries."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cacheprog.manifest import encode
from tests.conftest import StartGate
from tests.emulator import Emulator, start_emulator
from tests.gate.conftest import token_config
from tests.gatefixture import GateProcess, merge_config

ADMIN, WRITER, READER = "admin-token", "writer-token", "reader-token"
AUTH = token_config(
    (ADMIN, "cache-admin", "admin", ["*"]),
    (WRITER, "ci-writer", "writer", ["*"]),
    (READER, "ci-reader", "reader", ["*"]),
)
BACKENDS = ["local", pytest.param("gcs", marks=pytest.mark.gcs)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def action_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass
class Backend:
    """Where a test's gates store: a config section, the environment, and a way to age an entry."""

    name: str
    config: dict[str, Any]
    env: dict[str, str]
    emulator: Emulator | None = None

    def age(self, gate: GateProcess, namespace: str, action: str, days: float) -> None:
        """Move an entry's retention clock ``days`` into the past, as if nobody had used it since."""
        when = datetime.now(UTC) - timedelta(days=days)
        key = f"ac/{namespace}/{action[:2]}/{action}"
        if self.emulator is None:
            path = Path(self.config["storage"]["path"]) / key
            os.utime(path, (when.timestamp(), when.timestamp()))
            return
        name = urllib.parse.quote(f"{self.config['storage']['prefix']}/{key}", safe="")
        request = urllib.request.Request(
            f"{self.emulator.url}/storage/v1/b/{self.emulator.bucket}/o/{name}",
            data=json.dumps({"customTime": when.isoformat().replace("+00:00", "Z")}).encode(),
            method="PATCH",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):
            pass


@pytest.fixture(scope="session")
def admin_emulator() -> Iterator[Emulator]:
    """One emulator for the admin tests; each test stores under a prefix of its own."""
    with start_emulator() as emulator:
        yield emulator


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return Backend("local", {"storage": {"backend": "local", "path": str(tmp_path / "shared"), "fsync": False}}, {})
    emulator: Emulator = request.getfixturevalue("admin_emulator")
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    storage = {"backend": "gcs", "bucket": emulator.bucket, "prefix": prefix, "timeout_seconds": 5}
    return Backend("gcs", {"storage": storage}, emulator.env(), emulator)


@dataclass
class Cache:
    """A gate with the test's tokens, and the calls the tests make to it."""

    gate: GateProcess

    @property
    def url(self) -> str:
        return self.gate.url

    def put(
        self, namespace: str, action: str, body: bytes, *, compute_ms: int | None = None, job: str | None = None
    ) -> httpx.Response:
        headers = {"X-Go-Output-Id": hashlib.sha256(body).hexdigest(), "X-Go-Size": str(len(body)), **bearer(WRITER)}
        if compute_ms is not None:
            headers["X-Go-Compute-Ms"] = str(compute_ms)
        if job is not None:
            headers["X-Gocachegate-Job"] = job
        return httpx.put(f"{self.url}/v1/ns/{namespace}/actions/{action}", content=body, headers=headers, timeout=30)

    def get(self, namespace: str, action: str, *, job: str | None = None, token: str = READER) -> httpx.Response:
        headers = {**bearer(token), "Accept-Encoding": "identity"}
        if job is not None:
            headers["X-Gocachegate-Job"] = job
        return httpx.get(f"{self.url}/v1/ns/{namespace}/actions/{action}", headers=headers, timeout=30)

    def put_manifest(self, namespace: str, key: str, ids: int, description: str) -> None:
        """A writer's helper sending its go command's manifest of ``ids`` ids, in the helper's format."""
        body = encode([os.urandom(32) for _ in range(ids)], description)
        resp = httpx.put(f"{self.url}/v1/ns/{namespace}/manifests/{key}", content=body, headers=bearer(WRITER),
                         timeout=30)
        assert resp.status_code == 204, resp.text

    def admin(self, method: str, path: str, token: str | None = ADMIN, **kwargs: Any) -> httpx.Response:
        headers = {} if token is None else bearer(token)
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)


@pytest.fixture
def start_cache(gate_factory: StartGate, backend: Backend) -> Iterator[Any]:
    """``start_cache(extra_config=None)``: a gate on the test's backend with the test's tokens.
    Several calls share one storage: replicas of one deployment."""

    def start(extra: dict[str, Any] | None = None) -> Cache:
        config = merge_config(merge_config(backend.config, AUTH), extra or {})
        return Cache(gate_factory(config, env=backend.env))

    yield start


@pytest.fixture
def cache(start_cache: Any) -> Cache:
    cache: Cache = start_cache()
    return cache
