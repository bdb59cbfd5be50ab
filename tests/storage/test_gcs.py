"""The gcs backend beyond the protocol: what each call costs in requests, retention, integrity,
errors and time bounds, connection reuse and credentials. Real emulator, or a scripted loopback
server where GCS has to misbehave on demand."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import google_crc32c
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.storage import StorageSettings
from server.storage.base import HEAD_BYTES, StorageError, StorageUnavailable
from server.storage.gcs import GCSStorage
from tests.emulator import Emulator, EmulatorRequest, start_emulator
from tests.storage.conftest import gcs_settings
from tests.storage.standin import Reply, Seen, stand_in

pytestmark = [pytest.mark.anyio, pytest.mark.gcs]

MULTIPART_LIMIT = 8 << 20  # google-cloud-storage uploads up to this in one request


@pytest.fixture
async def gcs(shared_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GCSStorage]:
    backend = GCSStorage(gcs_settings(shared_emulator, monkeypatch))
    try:
        yield backend
    finally:
        await backend.aclose()


class Counter:
    """The requests that reached the emulator since the last look."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.seen = len(emulator.requests())

    def take(self) -> list[EmulatorRequest]:
        requests = self.emulator.requests()
        new, self.seen = requests[self.seen :], len(requests)
        return new

    def kinds(self) -> list[tuple[str, int]]:
        return [(r.kind, r.status) for r in self.take()]


async def test_each_call_costs_one_request(gcs: GCSStorage, shared_emulator: Emulator) -> None:
    count = Counter(shared_emulator)
    small, large = os.urandom(1000), os.urandom(HEAD_BYTES * 3 + 7)

    assert await gcs.write("small", small, len(small), {"a": "1"}, create_only=True)
    assert count.kinds() == [("upload", 200)]
    assert await gcs.write("small", small, len(small), {"a": "1"}, create_only=True) is False
    assert count.kinds() == [("upload", 412)]
    assert await gcs.write("large", large, len(large), {}, create_only=True)
    assert count.kinds() == [("upload", 200)]

    reader = await gcs.read("small")
    assert reader is not None and reader.head == small
    assert count.kinds() == [("media", 200)]

    reader = await gcs.read("large")
    assert reader is not None and reader.rest is not None
    assert reader.head + b"".join([chunk async for chunk in reader.rest]) == large
    assert count.kinds() == [("media", 200)]  # head and rest: one response

    assert await gcs.read("missing") is None
    assert count.kinds() == [("media", 404)]

    await gcs.touch("small")
    assert count.kinds() == [("patch", 200)]
    assert await gcs.stat("small") is not None
    assert count.kinds() == [("get", 200)]
    assert len((await gcs.list("", limit=1)).items) == 1
    assert count.kinds() == [("list", 200)]
    await gcs.check()
    assert count.kinds() == [("list", 200)]  # the first check proves the bucket exists
    await gcs.check()
    assert count.kinds() == [("get", 404)]  # later ones are Class B
    assert await gcs.delete("small")
    assert [kind for kind, status in count.kinds() if status < 300] == ["delete"]


async def test_large_upload_is_resumable_and_create_only(gcs: GCSStorage, shared_emulator: Emulator) -> None:
    data = os.urandom(MULTIPART_LIMIT + 1)
    count = Counter(shared_emulator)
    assert await gcs.write("huge", io.BytesIO(data), len(data), {"m": "v"}, create_only=True)
    requests = count.take()
    assert [r.kind for r in requests] == ["upload", "upload"]  # one resumable session: start, bytes
    assert "uploadType=resumable" in requests[0].path
    assert await gcs.write("huge", io.BytesIO(data), len(data), {}, create_only=True) is False

    info = await gcs.stat("huge")
    assert info is not None and (info.size, info.metadata) == (len(data), {"m": "v"})
    reader = await gcs.read("huge")
    assert reader is not None and reader.rest is not None
    assert reader.head + b"".join([chunk async for chunk in reader.rest]) == data


async def test_custom_time_is_set_at_creation(gcs: GCSStorage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    await gcs.write("fresh", b"x", 1, {}, create_only=True)
    info = await gcs.stat("fresh")
    assert info is not None and info.custom_time is not None
    assert before <= info.custom_time <= datetime.now(UTC) + timedelta(seconds=1)
    [listed] = (await gcs.list("fresh")).items
    assert listed.custom_time == info.custom_time


class FailingFile(io.BytesIO):
    """A spooled body whose disk fails after ``good`` bytes."""

    def __init__(self, data: bytes, good: int) -> None:
        super().__init__(data)
        self.good = good

    def read(self, size: int | None = -1, /) -> bytes:
        if self.tell() + (len(self.getbuffer()) if size is None or size < 0 else size) > self.good:
            raise OSError("disk read failed")
        return super().read(size)


@pytest.mark.parametrize("size", [100_000, MULTIPART_LIMIT + 100_000])
async def test_failed_upload_leaves_no_object(gcs: GCSStorage, shared_emulator: Emulator, size: int) -> None:
    data = os.urandom(size)
    with pytest.raises((OSError, StorageError)):
        await gcs.write("broken", FailingFile(data, size // 2), size, {}, create_only=True)
    assert await gcs.read("broken") is None
    assert not [name for name in shared_emulator.object_names() if name.endswith("/broken")]


async def test_short_body_writes_nothing(gcs: GCSStorage) -> None:
    with pytest.raises(ValueError):
        await gcs.write("short", b"abc", 4, {}, create_only=True)
    with pytest.raises(ValueError):
        await gcs.write("short", io.BytesIO(b"abc"), 4, {}, create_only=True)
    assert await gcs.read("short") is None


async def test_prefix_keeps_keys_apart(shared_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = gcs_settings(shared_emulator, monkeypatch, prefix="tenant-a/cache/")
    backend = GCSStorage(settings)
    try:
        await backend.write("ac/x", b"1", 1, {}, create_only=True)
        assert "tenant-a/cache/ac/x" in shared_emulator.object_names("tenant-a/")
        assert [i.key for i in (await backend.list("ac/")).items] == ["ac/x"]
    finally:
        await backend.aclose()


# -- failures: every one ends as StorageUnavailable or StorageError within the time budget ----------


def settings_for(
    url: str, monkeypatch: pytest.MonkeyPatch, timeout: float = 1.5, threads: int = 4, bucket: str = "b-test"
) -> StorageSettings:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return StorageSettings(backend="gcs", bucket=bucket, timeout_seconds=timeout, threads=threads)


async def test_stopped_emulator_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with start_emulator() as emulator:
        backend = GCSStorage(settings_for(emulator.url, monkeypatch, timeout=0.5, bucket=emulator.bucket))
        await backend.check()
        emulator.stop()
        for call in (
            backend.check,
            lambda: backend.read("k"),
            lambda: backend.write("k", b"", 0, {}, create_only=True),
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await call()
            assert time.monotonic() - started < 0.5 + 0.4
        await backend.aclose()


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_answers_are_retried_then_unavailable(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    body = json.dumps({"error": {"code": status, "message": "try later"}}).encode()
    with stand_in(lambda seen: Reply(status, body)) as server:
        backend = GCSStorage(settings_for(server.url, monkeypatch, timeout=0.5))
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: backend.read("k"),
            lambda: backend.write("k", b"x", 1, {}, create_only=True),
        ]
        if status == 503:
            calls += [lambda: backend.list(""), lambda: backend.stat("k"), backend.check]
            calls += [lambda: backend.touch("k"), lambda: backend.delete("k")]
        for call in calls:
            before, started = len(server.seen), time.monotonic()
            with pytest.raises(StorageUnavailable):
                await call()
            assert time.monotonic() - started < 0.5 + 0.4
            assert len(server.seen) - before > 1  # the library's retry tried again
        await backend.aclose()


async def test_silent_server_cannot_hold_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    with stand_in(lambda seen: Reply(404, delay=10)) as server:
        backend = GCSStorage(settings_for(server.url, monkeypatch, timeout=1.0))
        calls: list[Callable[[], Awaitable[object]]] = [backend.check, lambda: backend.read("k")]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await call()
            assert time.monotonic() - started < 1.0 + 0.5
        await backend.aclose()


async def test_refusal_is_an_error_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"error": {"code": 403, "message": "denied"}}).encode()
    with stand_in(lambda seen: Reply(403, body)) as server:
        backend = GCSStorage(settings_for(server.url, monkeypatch))
        with pytest.raises(StorageError) as caught:
            await backend.read("k")
        assert not isinstance(caught.value, StorageUnavailable)
        assert len(server.seen) == 1
        await backend.aclose()


def media(body: bytes, crc_of: bytes | None = None, **extra: str) -> Reply:
    crc = base64.b64encode(google_crc32c.value(body if crc_of is None else crc_of).to_bytes(4, "big")).decode()
    headers = {"x-goog-stored-content-length": str(len(body)), "x-goog-hash": f"crc32c={crc}", **extra}
    return Reply(200, body, headers)


async def test_corrupt_media_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = os.urandom(100), os.urandom(HEAD_BYTES + 100)
    replies = {"small": media(small, crc_of=b"other"), "large": media(large, crc_of=b"other")}
    with stand_in(lambda seen: replies[seen.path.split("/o/")[1].split("?")[0]]) as server:
        backend = GCSStorage(settings_for(server.url, monkeypatch))
        with pytest.raises(StorageError):
            await backend.read("small")
        reader = await backend.read("large")
        assert reader is not None and reader.rest is not None
        with pytest.raises(StorageError):
            _ = [chunk async for chunk in reader.rest]
        await backend.aclose()


async def test_truncated_media_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    large = os.urandom(HEAD_BYTES * 2)
    reply = media(large)
    reply.cut_after = HEAD_BYTES + 1000
    with stand_in(lambda seen: reply) as server:
        backend = GCSStorage(settings_for(server.url, monkeypatch))
        reader = await backend.read("large")
        assert reader is not None and reader.head == large[:HEAD_BYTES] and reader.rest is not None
        with pytest.raises(StorageError):
            _ = [chunk async for chunk in reader.rest]
        assert len(server.seen) == 1  # the rest never costs a second request
        await backend.aclose()


async def test_threads_share_a_pool_of_kept_alive_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    with stand_in(lambda seen: Reply(404, delay=0.05)) as server:
        backend = GCSStorage(settings_for(server.url, monkeypatch, threads=4))
        for _ in range(2):
            async with anyio.create_task_group() as group:
                for n in range(16):
                    group.start_soon(backend.read, f"k{n}")
        await backend.aclose()
    assert len(server.seen) == 32
    assert server.max_active == 4  # the thread pool bounds concurrency...
    assert len({seen.client_port for seen in server.seen}) == 4  # ...and each thread keeps its connection


# -- credentials -------------------------------------------------------------------------------------


async def test_credential_file_is_used_even_with_an_emulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A key file wins over the emulator's anonymous default: its token reaches the storage API."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.json"

    def answer(seen: Seen) -> Reply:
        if seen.path == "/token":
            return Reply(200, json.dumps({"access_token": "tok-from-key", "expires_in": 3600}).encode())
        return Reply(404, b"{}")

    with stand_in(answer) as server:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        info = {
            "type": "service_account",
            "project_id": "from-key",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "gate@from-key.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"{server.url}/token",
        }
        path.write_text(json.dumps(info))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        backend = GCSStorage(StorageSettings(backend="gcs", bucket="b-test", project="p1", timeout_seconds=2))
        assert await backend.read("k") is None
        await backend.aclose()

    assert [(s.method, s.path) for s in server.seen] == [("POST", "/token"), ("GET", server.seen[1].path)]
    assert server.seen[1].headers["authorization"] == "Bearer tok-from-key"


async def test_emulator_without_credential_file_is_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    with stand_in(lambda seen: Reply(404, b"{}")) as server:
        backend = GCSStorage(settings_for(server.url, monkeypatch))
        assert await backend.read("k") is None
        await backend.aclose()
    assert "authorization" not in server.seen[0].headers
