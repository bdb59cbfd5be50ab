"""The usage ledger: two gate processes on one storage add up exactly, storage operations are charged
to the requests that made them, a failed flush loses nothing, compaction changes no total, and job
labels cannot grow the ledger without bound."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.storage.base import StorageError
from server.usage.counters import Counts, Dims
from server.usage.ledger import UsageLedger
from server.usage.segments import encode_segment, segment_key
from tests.admin.conftest import READER, Cache, action_of, bearer
from tests.gate.conftest import InProcess, entry_headers, in_process, new_action

NS = "team.u"


def _requests(cache: Cache, job: str, tag: str, new: int, present: list[str], hits: int, misses: int) -> dict[str, Any]:
    """Send a known mix to one gate; returns what its ledger must hold for (NS, job)."""
    bodies = [os.urandom(1000 + 10 * i) for i in range(new)]
    actions = [action_of(f"{tag} {i}") for i in range(new)]
    for action, body in zip(actions, bodies, strict=True):
        assert cache.put(NS, action, body, compute_ms=250, job=job).status_code == 201
    for action in present:
        assert cache.put(NS, action, b"whatever it was", job=job).status_code == 200
    for i in range(hits):
        assert cache.get(NS, actions[i % new], job=job).status_code == 200
    for i in range(misses):
        assert cache.get(NS, action_of(f"{tag} missing {i}"), job=job).status_code == 404
    return {
        "requests": new + len(present) + hits + misses,
        "hits": hits,
        "misses": misses,
        "puts_new": new,
        "puts_present": len(present),
        "bytes_in": sum(len(b) for b in bodies),
        "bytes_out": sum(len(bodies[i % new]) for i in range(hits)),
        "compute_ms_saved": 250 * hits,
        # a new put: stat (B) + write (A); a present one: stat (B); a hit or a miss: one read (B)
        "ops_a": new,
        "ops_b": new + len(present) + hits + misses,
    }


def _reject(cache: Cache, job: str) -> None:
    """A put whose digest does not match: refused after its stat (B), nothing written."""
    headers = {"X-Go-Output-Id": hashlib.sha256(b"other").hexdigest(), "X-Go-Size": "4", "X-Gocachegate-Job": job}
    resp = httpx.put(f"{cache.url}/v1/ns/{NS}/actions/{action_of('rejected')}", content=b"body", headers={
        **headers, **bearer("writer-token")})
    assert resp.status_code == 400


def _session(cache: Cache, job: str) -> None:
    report = {"gets": 9, "hits": 7, "local_hits": 2, "remote_hits": 5, "misses": 2, "puts": 2, "uploads": 2,
              "bytes_downloaded": 5000, "bytes_uploaded": 3000, "remote_wait_ms": 120, "compute_ms_saved": 1250,
              "duration_ms": 4000, "job_name": job, "job_type": "postsubmit"}
    resp = httpx.post(f"{cache.url}/v1/ns/{NS}/sessions", json=report, headers=bearer(READER))
    assert resp.status_code == 202


def _rows(cache: Cache, group_by: str) -> dict[tuple[str, ...], dict[str, Any]]:
    data = cache.admin("GET", f"/v1/admin/usage?since=1d&group_by={group_by}").json()
    groups = data["group_by"]
    return {tuple(row[g] for g in groups): row for row in data["rows"]}


def test_two_replicas_add_up(start_cache: Any) -> None:
    one, two = start_cache(), start_cache()
    want_a = _requests(one, "job-a", "a", new=4, present=[], hits=3, misses=2)
    _reject(one, "job-a")
    want_a.update(requests=want_a["requests"] + 1, puts_rejected=1, ops_b=want_a["ops_b"] + 1)
    want_b = _requests(two, "job-b", "b", new=2, present=[action_of("a 0"), action_of("a 1")], hits=5, misses=1)
    _session(two, "job-b")
    assert one.gate.stop() == 0 and two.gate.stop() == 0  # SIGTERM: each flushes on the way out

    third = start_cache()
    rows = _rows(third, "namespace,job")
    for job, want in (("job-a", want_a), ("job-b", want_b)):
        row = rows[NS, job]
        assert {k: row[k] for k in want} == want, job
    assert rows[NS, "job-b"]["sessions"] == 1
    assert rows[NS, "job-b"]["session_remote_hits"] == 5 and rows[NS, "job-b"]["session_compute_ms_saved"] == 1250
    [total] = [row for key, row in _rows(third, "namespace").items() if key == (NS,)]
    for field in ("requests", "hits", "misses", "puts_new", "bytes_in", "bytes_out", "ops_a", "ops_b"):
        assert total[field] == want_a.get(field, 0) + want_b.get(field, 0), field
    by_subject = _rows(third, "namespace,subject")
    assert by_subject[NS, "ci-writer"]["puts"] == 4 + 1 + 2 + 2
    assert by_subject[NS, "ci-reader"]["requests"] == 3 + 2 + 5 + 1


def test_a_replica_flushes_while_it_runs(start_cache: Any) -> None:
    one, two = start_cache({"usage": {"flush_seconds": 1}}), start_cache({"usage": {"flush_seconds": 1}})
    want = _requests(two, "job-live", "live", new=2, present=[], hits=2, misses=1)
    deadline = time.monotonic() + 20
    while (row := _rows(one, "namespace,job").get((NS, "job-live"))) is None or row["requests"] < want["requests"]:
        assert time.monotonic() < deadline, "the other replica's counts never showed"
        time.sleep(0.3)
    assert {k: row[k] for k in want} == want


async def _get(gate: InProcess, ns: str, action: str, **headers: str) -> int:
    resp = await gate.client.get(f"/v1/ns/{ns}/actions/{action}", headers=headers)
    return resp.status_code


@pytest.mark.anyio
async def test_a_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    async with in_process(tmp_path) as gate:
        ledger: UsageLedger = gate.app.state.usage
        body = b"x" * 100
        action = new_action()
        assert (await gate.client.put(f"/v1/ns/{NS}/actions/{action}", content=body,
                                      headers=entry_headers(body))).status_code == 201
        blocker = gate.storage_path / "usage"
        blocker.write_text("a file where the ledger wants a directory")
        with pytest.raises(StorageError):
            await ledger.flush()
        assert await _get(gate, NS, action) == 200
        with pytest.raises(StorageError):
            await ledger.flush()
        blocker.unlink()
        assert await ledger.flush() == 1
        totals = (await gate.client.get("/v1/admin/usage")).json()["totals"]
        assert (totals["requests"], totals["puts_new"], totals["hits"]) == (2, 1, 1)


async def _usage(gate: InProcess, query: str) -> dict[str, Any]:
    resp = await gate.client.get(f"/v1/admin/usage?{query}")
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


async def _team_rows(gate: InProcess, query: str) -> list[dict[str, Any]]:
    """The rows of NS (the gate's own row grows with every report it makes)."""
    return [row for row in (await _usage(gate, query))["rows"] if row["namespace"] == NS]


@pytest.mark.anyio
async def test_compaction_changes_no_total(tmp_path: Path) -> None:
    async with in_process(tmp_path) as gate:
        storage = gate.gate.storage
        day = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
        first_hour = int(day.timestamp()) // 3600
        written = []
        for replica in ("r1", "r2"):
            for offset, n in ((1, 3), (5, 4), (20, 5)):
                hour = first_hour + offset
                rows = {Dims(NS, "ci-writer", f"job-{offset}", "periodic"): Counts(requests=n, hits=n - 1, ops_b=n)}
                body = encode_segment(replica, hour, rows)
                await storage.write(segment_key(hour, replica), body, len(body), {}, create_only=False)
                written.append(segment_key(hour, replica))
        query = "since=10d&group_by=namespace,job,day"
        before = await _team_rows(gate, query)
        assert sum(row["requests"] for row in before) == 2 * (3 + 4 + 5)
        assert len(before) == 3

        answer = (await gate.client.post("/v1/admin/usage/compact", json={"older_than": "2d"})).json()
        assert answer == {"days": 1, "segments": 6}
        assert await _team_rows(gate, query) == before
        names = [info.key for info in (await storage.list("usage/v1/")).items]
        assert f"usage/v1/d/{day.date().isoformat()}.json" in names
        assert not set(written) & set(names)

        # a segment that outlived its compaction (its delete failed) is skipped, then deleted next time
        hour = first_hour + 1
        body = encode_segment("r1", hour, {Dims(NS, "ci-writer", "job-1", "periodic"): Counts(requests=3)})
        await storage.write(segment_key(hour, "r1"), body, len(body), {}, create_only=False)
        assert await _team_rows(gate, query) == before
        answer = (await gate.client.post("/v1/admin/usage/compact", json={"older_than": "2d"})).json()
        assert answer == {"days": 0, "segments": 1}
        assert await _team_rows(gate, query) == before


@pytest.mark.anyio
async def test_job_labels_cannot_grow_the_ledger_without_bound(tmp_path: Path) -> None:
    async with in_process(tmp_path, {"usage": {"max_rows_per_hour": 10}}) as gate:
        for i in range(25):
            assert await _get(gate, NS, new_action(), **{"X-Gocachegate-Job": f"job-{i}" + "x" * 300}) == 404
        rows = (await _usage(gate, "group_by=job"))["rows"]
        jobs = {row["job"]: row["requests"] for row in rows if row["requests"]}
        assert sum(jobs.values()) == 25
        assert jobs["(other)"] >= 15
        assert all(len(job) <= 128 for job in jobs)


@pytest.mark.anyio
async def test_a_prefetch_stream_counts_as_hits_charged_to_its_caller(tmp_path: Path) -> None:
    async with in_process(tmp_path) as gate:
        bodies = {new_action(): os.urandom(3000 + i) for i in range(4)}
        for action, body in bodies.items():
            headers = entry_headers(body, **{"X-Go-Compute-Ms": "700"})
            resp = await gate.client.put(f"/v1/ns/{NS}/actions/{action}", content=body, headers=headers)
            assert resp.status_code == 201
        ids = b"".join(bytes.fromhex(a) for a in [*bodies, new_action()])
        resp = await gate.client.post(f"/v1/ns/{NS}/prefetch", content=ids, headers={"X-Gocachegate-Job": "warm"})
        assert resp.status_code == 200 and len(resp.content) > sum(len(b) for b in bodies.values())
        rows = {row["job"]: row for row in (await _usage(gate, "group_by=job"))["rows"]}
        warm = rows["warm"]
        assert (warm["requests"], warm["hits"], warm["misses"]) == (1, 4, 1)
        assert warm["bytes_out"] == sum(len(b) for b in bodies.values())  # random bytes: sent as stored, uncompressed
        assert (warm["ops_a"], warm["ops_b"]) == (0, 5)  # one read per id, charged to the caller
        assert warm["compute_ms_saved"] == 0  # whether Go uses them, the helper's session report says
