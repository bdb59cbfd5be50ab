"""GET and PUT of entries, in process: the real app, lifespan and local storage, no sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from server.entries import entry_key, parse_frame
from tests.gate.conftest import InProcess, entry_headers, in_process, new_action

pytestmark = pytest.mark.anyio

PLAIN = {"Accept-Encoding": "identity"}
COMPRESSIBLE = b"package main\nfunc main() {}\n" * 400  # ~11 KB, compresses well
RANDOM = os.urandom(20_000)  # does not compress


def url(action: str, ns: str = "team.repo") -> str:
    return f"/v1/ns/{ns}/actions/{action}"


async def put(gate: InProcess, action: str, body: bytes, ns: str = "team.repo", **headers: str) -> int:
    resp = await gate.client.put(url(action, ns), content=body, headers=entry_headers(body, **headers))
    return resp.status_code


async def raw_get(gate: InProcess, action: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and the body exactly as sent (no transparent decoding by httpx)."""
    async with gate.client.stream("GET", url(action), headers=headers) as resp:
        raw = b"".join([chunk async for chunk in resp.aiter_raw()])
        return resp.status_code, dict(resp.headers), raw


@pytest.mark.parametrize("body", [b"", b"tiny", COMPRESSIBLE, RANDOM], ids=["empty", "tiny", "text", "random"])
async def test_round_trip_plain(gate_app: InProcess, body: bytes) -> None:
    action = new_action()
    assert await put(gate_app, action, body, **{"X-Go-Compute-Ms": "1234"}) == 201
    status, headers, raw = await raw_get(gate_app, action, **PLAIN)
    assert status == 200
    assert raw == body
    assert headers["x-go-output-id"] == hashlib.sha256(body).hexdigest()
    assert headers["x-go-size"] == str(len(body)) == headers["content-length"]
    assert headers["x-go-compute-ms"] == "1234"
    assert "content-encoding" not in headers
    put_time = datetime.fromisoformat(headers["x-go-put-time"])
    assert abs(put_time - datetime.now(UTC)) < timedelta(seconds=10)


async def test_plain_put_is_stored_compressed_and_served_as_stored_to_zstd_clients(gate_app: InProcess) -> None:
    action = new_action()
    assert await put(gate_app, action, COMPRESSIBLE) == 201
    status, headers, raw = await raw_get(gate_app, action, **{"Accept-Encoding": "gzip, zstd"})
    assert status == 200 and headers["content-encoding"] == "zstd"
    assert len(raw) < len(COMPRESSIBLE) // 5 and headers["content-length"] == str(len(raw))
    assert headers["x-go-size"] == str(len(COMPRESSIBLE))
    assert zstandard.ZstdDecompressor().decompress(raw) == COMPRESSIBLE
    # q=0 refuses zstd: decoded for that client
    status, headers, raw = await raw_get(gate_app, action, **{"Accept-Encoding": "zstd;q=0, gzip"})
    assert raw == COMPRESSIBLE and "content-encoding" not in headers


async def test_incompressible_and_small_bodies_are_stored_plain(gate_app: InProcess) -> None:
    for body in (RANDOM, b"x" * 100):
        action = new_action()
        assert await put(gate_app, action, body) == 201
        status, headers, raw = await raw_get(gate_app, action, **{"Accept-Encoding": "zstd"})
        assert (status, raw) == (200, body) and "content-encoding" not in headers


async def test_zstd_put_is_stored_as_received(gate_app: InProcess) -> None:
    action = new_action()
    sent = zstandard.ZstdCompressor(level=3).compress(COMPRESSIBLE)
    headers = entry_headers(COMPRESSIBLE, **{"Content-Encoding": "zstd"})
    resp = await gate_app.client.put(url(action), content=sent, headers=headers)
    assert resp.status_code == 201 and resp.json()["encoding"] == "zstd"
    _, got_headers, raw = await raw_get(gate_app, action, **{"Accept-Encoding": "zstd"})
    assert raw == sent and got_headers["x-go-size"] == str(len(COMPRESSIBLE))
    _, _, plain = await raw_get(gate_app, action, **PLAIN)
    assert plain == COMPRESSIBLE


async def test_zstd_put_of_incompressible_data_is_stored_plain(gate_app: InProcess) -> None:
    action = new_action()
    sent = zstandard.ZstdCompressor(level=1).compress(RANDOM)
    assert len(sent) >= len(RANDOM)
    resp = await gate_app.client.put(
        url(action), content=sent, headers=entry_headers(RANDOM, **{"Content-Encoding": "zstd"})
    )
    assert resp.status_code == 201 and resp.json()["encoding"] == "identity"
    _, headers, raw = await raw_get(gate_app, action, **{"Accept-Encoding": "zstd"})
    assert raw == RANDOM and "content-encoding" not in headers


@pytest.mark.parametrize("compressible", [True, False], ids=["zstd-stored", "plain-stored"])
async def test_large_entries_stream_both_ways(gate_app: InProcess, compressible: bool) -> None:
    """Over HEAD_BYTES and SPOOL_MEMORY: spooled to disk on put, streamed in pieces on get."""
    body = (os.urandom(64) * 50_000) if compressible else os.urandom(3 << 20)
    action = new_action()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 100_000):
            yield body[i : i + 100_000]

    resp = await gate_app.client.put(url(action), content=chunks(), headers=entry_headers(body))
    assert resp.status_code == 201
    assert resp.json()["encoding"] == ("zstd" if compressible else "identity")
    status, headers, raw = await raw_get(gate_app, action, **PLAIN)
    assert status == 200 and headers["content-length"] == str(len(body)) and raw == body
    status, headers, raw = await raw_get(gate_app, action, **{"Accept-Encoding": "zstd"})
    decoded = zstandard.ZstdDecompressor().decompress(raw, max_output_size=len(body)) if compressible else raw
    assert decoded == body


async def test_miss_is_404_with_a_reason(gate_app: InProcess) -> None:
    resp = await gate_app.client.get(url(new_action()))
    assert resp.status_code == 404 and resp.json() == {"error": "no such entry"}
    assert gate_app.ops() == {("read", "miss"): 1}


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/v1/ns/a%2Fb/actions/" + "a" * 64, "bad namespace"),
        ("/v1/ns/-lead/actions/" + "a" * 64, "bad namespace"),
        ("/v1/ns/" + "n" * 129 + "/actions/" + "a" * 64, "bad namespace"),
        ("/v1/ns/ok/actions/" + "A" * 64, "bad action id"),
        ("/v1/ns/ok/actions/" + "a" * 63, "bad action id"),
        ("/v1/ns/ok/actions/" + "a" * 65, "bad action id"),
        ("/v1/ns/ok/actions/" + "a" * 32 + "%2F" + "a" * 31, "bad action id"),
    ],
)
async def test_bad_names_are_400_before_storage(gate_app: InProcess, path: str, reason: str) -> None:
    # Dot segments are in test_process.py: httpx removes them before sending.
    for method in ("GET", "PUT"):
        request = gate_app.client.build_request(method, "http://gate/", content=b"x", headers=entry_headers(b"x"))
        request.url = request.url.copy_with(raw_path=path.encode())
        resp = await gate_app.client.send(request)
        assert resp.status_code == 400, (method, path, resp.text)
        assert resp.json()["error"].startswith(reason)
    assert gate_app.ops() == {}


async def test_digest_mismatch_writes_nothing(gate_app: InProcess) -> None:
    action = new_action()
    headers = entry_headers(b"the real body")
    resp = await gate_app.client.put(url(action), content=b"another body!", headers=headers)
    assert resp.status_code == 400 and "digest mismatch" in resp.json()["error"]
    assert ("write", "ok") not in gate_app.ops() and gate_app.files() == []
    assert (await gate_app.client.get(url(action))).status_code == 404


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Go-Size": "5"}, "missing X-Go-Output-Id"),
        ({"X-Go-Output-Id": "ab" * 32}, "missing X-Go-Size"),
        ({"X-Go-Output-Id": "AB" * 32, "X-Go-Size": "5"}, "bad X-Go-Output-Id"),
        ({"X-Go-Output-Id": "ab" * 32, "X-Go-Size": "-5"}, "bad X-Go-Size"),
        ({"X-Go-Output-Id": "ab" * 32, "X-Go-Size": "5", "X-Go-Compute-Ms": "soon"}, "bad X-Go-Compute-Ms"),
        ({"X-Go-Output-Id": "ab" * 32, "X-Go-Size": "5", "Content-Encoding": "gzip"}, "unsupported Content-Encoding"),
        ({"X-Go-Output-Id": "ab" * 32, "X-Go-Size": "4"}, "Content-Length does not match"),
    ],
)
async def test_bad_put_headers(gate_app: InProcess, headers: dict[str, str], reason: str) -> None:
    resp = await gate_app.client.put(url(new_action()), content=b"hello", headers=headers)
    assert resp.status_code == 400 and resp.json()["error"].startswith(reason), resp.text
    assert gate_app.files() == []


async def test_body_shorter_than_announced_is_rejected(gate_app: InProcess) -> None:
    body = b"hello world"

    async def short() -> AsyncIterator[bytes]:
        yield body[:5]

    headers = entry_headers(body)
    resp = await gate_app.client.put(url(new_action()), content=short(), headers=headers)
    assert resp.status_code == 400 and "X-Go-Size says" in resp.json()["error"]
    assert gate_app.files() == []


async def test_too_large_by_headers_is_413_without_reading(tmp_path: Path) -> None:
    async with in_process(tmp_path, {"limits": {"max_entry_bytes": 1000}}) as gate:
        body = b"y" * 1001
        resp = await gate.client.put(url(new_action()), content=body, headers=entry_headers(body))
        assert resp.status_code == 413 and "over the limit of 1000" in resp.json()["error"]
        # a zstd body announcing a small decoded size but a large Content-Length
        packed = os.urandom(1500)
        headers = entry_headers(b"z" * 10, **{"Content-Encoding": "zstd"})
        resp = await gate.client.put(url(new_action()), content=packed, headers=headers)
        assert resp.status_code == 413 and "Content-Length" in resp.json()["error"]
        assert gate.ops() == {} and gate.files() == []


async def test_too_large_while_streaming_is_413(tmp_path: Path) -> None:
    async with in_process(tmp_path, {"limits": {"max_entry_bytes": 100_000}}) as gate:
        announced = b"a" * 100_000  # within the limit; the body then runs over it

        async def endless() -> AsyncIterator[bytes]:
            for _ in range(50):
                yield b"a" * 10_000

        resp = await gate.client.put(url(new_action()), content=endless(), headers=entry_headers(announced))
        assert resp.status_code == 413 and "body is over the limit" in resp.json()["error"]
        assert gate.files() == []


async def test_zstd_bomb_is_rejected_with_bounded_work(gate_app: InProcess) -> None:
    huge = bytes(256 << 20)  # 256 MiB of zeros compress to a few KB
    bomb = zstandard.ZstdCompressor(level=3).compress(huge)
    assert len(bomb) < 64 << 10
    headers = entry_headers(b"\0" * 1000, **{"Content-Encoding": "zstd"})
    resp = await gate_app.client.put(url(new_action()), content=bomb, headers=headers)
    assert resp.status_code == 400 and resp.json()["error"] == "decoded size exceeds X-Go-Size"
    assert gate_app.files() == []


async def test_garbage_zstd_body_is_400(gate_app: InProcess) -> None:
    headers = entry_headers(b"hello", **{"Content-Encoding": "zstd"})
    resp = await gate_app.client.put(url(new_action()), content=b"not zstd at all", headers=headers)
    assert resp.status_code == 400 and resp.json()["error"].startswith("bad zstd body")


async def test_second_put_is_200_and_writes_nothing(gate_app: InProcess) -> None:
    action = new_action()
    assert await put(gate_app, action, COMPRESSIBLE) == 201
    before = {p: p.stat().st_mtime_ns for p in gate_app.files()}
    resp = await gate_app.client.put(url(action), content=b"other", headers=entry_headers(b"other"))
    assert resp.status_code == 200 and resp.json() == {"status": "present"}
    assert gate_app.ops()[("write", "ok")] == 1 and ("write", "exists") not in gate_app.ops()
    assert {p: p.stat().st_mtime_ns for p in gate_app.files()} == before
    _, _, raw = await raw_get(gate_app, action, **PLAIN)
    assert raw == COMPRESSIBLE


async def test_concurrent_puts_one_wins(gate_app: InProcess) -> None:
    action = new_action()
    bodies = [os.urandom(50_000), os.urandom(50_000)]
    statuses = await asyncio.gather(*(put(gate_app, action, body) for body in bodies))
    assert sorted(statuses) == [200, 201]
    _, headers, raw = await raw_get(gate_app, action, **PLAIN)
    assert raw in bodies and headers["x-go-output-id"] == hashlib.sha256(raw).hexdigest()


async def test_hit_costs_one_read_and_put_one_stat_and_one_write(gate_app: InProcess) -> None:
    action = new_action()
    assert await put(gate_app, action, COMPRESSIBLE) == 201
    assert gate_app.ops() == {("stat", "miss"): 1, ("write", "ok"): 1}
    assert (await gate_app.client.get(url(action))).status_code == 200
    assert gate_app.ops()[("read", "ok")] == 1
    assert gate_app.gate.storage.by_class() == {"A": 1, "B": 2}


async def test_stored_frame_and_metadata(gate_app: InProcess) -> None:
    action = new_action()
    assert await put(gate_app, action, COMPRESSIBLE, **{"X-Go-Compute-Ms": "77"}) == 201
    storage = gate_app.gate.storage
    info = await storage.stat(entry_key("team.repo", action))
    reader = await storage.read(entry_key("team.repo", action))
    assert info is not None and reader is not None
    header, _ = parse_frame(reader.head)
    assert dict(info.metadata) == {
        "output_id": hashlib.sha256(COMPRESSIBLE).hexdigest(),
        "size": str(len(COMPRESSIBLE)),
        "encoding": "zstd",
        "put_time": header.put_time,
        "writer": "anonymous",
        "compute_ms": "77",
    }
    assert header.compute_ms == 77 and header.writer == "anonymous"


async def test_corrupt_entry_is_a_miss_and_removed(gate_app: InProcess) -> None:
    action = new_action()
    key = entry_key("team.repo", action)
    await gate_app.gate.storage.write(key, b"GCE1garbage", 11, {}, create_only=True)
    resp = await gate_app.client.get(url(action))
    assert resp.status_code == 404 and "unreadable" in resp.json()["error"]
    assert await gate_app.gate.storage.stat(key) is None
    assert await put(gate_app, action, b"repaired") == 201


async def test_old_entry_hit_is_touched_once(gate_app: InProcess) -> None:
    action = new_action()
    assert await put(gate_app, action, b"old entry") == 201
    entries = gate_app.gate.entries
    key = entry_key("team.repo", action)
    # Pretend the entry was written two days ago (the frame's put_time drives the first touch).
    reader = await gate_app.gate.storage.read(key)
    assert reader is not None
    header, start = parse_frame(reader.head)
    old = dataclasses.replace(header, put_time="2000-01-01T00:00:00.000Z")
    frame = old.frame_prefix() + reader.head[start:]
    await gate_app.gate.storage.write(key, frame, len(frame), old.metadata(), create_only=False)

    for _ in range(3):
        assert (await gate_app.client.get(url(action))).status_code == 200
    await asyncio.sleep(0.05)
    assert not entries._touches
    assert gate_app.ops()[("touch", "ok")] == 1
    info = await gate_app.gate.storage.stat(key)
    assert info is not None and info.custom_time is not None


async def test_fresh_entry_hit_is_not_touched(gate_app: InProcess) -> None:
    action = new_action()
    assert await put(gate_app, action, b"new entry") == 201
    for _ in range(3):
        assert (await gate_app.client.get(url(action))).status_code == 200
    await asyncio.sleep(0.05)
    assert ("touch", "ok") not in gate_app.ops()
