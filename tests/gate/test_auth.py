"""Static tokens: who may read, write and report where; refusals write nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gate.conftest import InProcess, entry_headers, in_process, new_action, token_config

pytestmark = pytest.mark.anyio

TOKENS = token_config(
    ("reader-token", "ci:presubmit", "reader", ["team.*"]),
    ("writer-token", "ci:postsubmit", "writer", ["team.*"]),
    ("admin-token", "ops", "admin", ["*"]),
    ("other-writer", "ci:other", "writer", ["other"]),
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def gate(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with in_process(tmp_path, TOKENS) as g:
        yield g


@pytest.mark.parametrize(
    ("authorization", "reason", "challenge"),
    [
        (None, "missing bearer token", 'Bearer realm="gocachegate"'),
        ("Basic dXNlcjpwYXNz", "Authorization must be 'Bearer <token>'", 'error="invalid_token"'),
        ("Bearer not-a-known-token", "unknown or invalid token", 'error="invalid_token"'),
        ("Bearer ", "Authorization must be 'Bearer <token>'", 'error="invalid_token"'),
    ],
)
async def test_401(gate: InProcess, authorization: str | None, reason: str, challenge: str) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path in [("GET", f"/v1/ns/team.a/actions/{new_action()}"), ("GET", "/v1/whoami")]:
        resp = await gate.client.request(method, path, headers=headers)
        assert resp.status_code == 401 and resp.json() == {"error": reason}
        assert challenge in resp.headers["www-authenticate"]
    assert gate.ops() == {}


async def test_probes_and_metrics_need_no_token(gate: InProcess) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await gate.client.get(path)).status_code == 200


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("reader-token", {"subject": "ci:presubmit", "role": "reader", "namespaces": ["team.*"]}),
        ("admin-token", {"subject": "ops", "role": "admin", "namespaces": ["*"]}),
    ],
)
async def test_whoami(gate: InProcess, token: str, expected: dict[str, object]) -> None:
    resp = await gate.client.get("/v1/whoami", headers=bearer(token))
    assert resp.status_code == 200 and resp.json() == expected


async def test_reader_reads_granted_namespaces_only(gate: InProcess) -> None:
    action = new_action()
    resp = await gate.client.get(f"/v1/ns/team.repo/actions/{action}", headers=bearer("reader-token"))
    assert resp.status_code == 404  # allowed: a miss
    resp = await gate.client.get(f"/v1/ns/other/actions/{action}", headers=bearer("reader-token"))
    assert resp.status_code == 403 and resp.json() == {"error": "namespace other not granted"}
    resp = await gate.client.get(f"/v1/ns/team/actions/{action}", headers=bearer("reader-token"))
    assert resp.status_code == 403  # "team.*" does not cover "team"
    assert gate.ops() == {("read", "miss"): 1}


async def test_reader_put_is_403_and_writes_nothing(gate: InProcess) -> None:
    body = b"an output"
    headers = {**entry_headers(body), **bearer("reader-token")}
    resp = await gate.client.put(f"/v1/ns/team.repo/actions/{new_action()}", content=body, headers=headers)
    assert resp.status_code == 403 and resp.json() == {"error": "role reader may not write"}
    assert gate.ops() == {} and gate.files() == []


async def test_writer_writes_granted_namespaces_only(gate: InProcess) -> None:
    body = b"an output"
    action = new_action()
    headers = {**entry_headers(body), **bearer("writer-token")}
    resp = await gate.client.put(f"/v1/ns/team.repo/actions/{action}", content=body, headers=headers)
    assert resp.status_code == 201
    resp = await gate.client.put(f"/v1/ns/other/actions/{action}", content=body, headers=headers)
    assert resp.status_code == 403 and resp.json() == {"error": "namespace other not granted"}
    headers = {**entry_headers(body), **bearer("other-writer")}
    resp = await gate.client.put(f"/v1/ns/other/actions/{action}", content=body, headers=headers)
    assert resp.status_code == 201
    assert [p.relative_to(gate.storage_path).parts[:2] for p in gate.files()] == [
        ("ac", "other"),
        ("ac", "team.repo"),
    ]
    # the reader sees what the writer put, with the writer recorded
    resp = await gate.client.get(f"/v1/ns/team.repo/actions/{action}", headers=bearer("reader-token"))
    assert resp.status_code == 200 and resp.content == body


async def test_sessions_need_a_granted_namespace(gate: InProcess) -> None:
    report = {"gets": 3, "hits": 2, "misses": 1}
    ok = await gate.client.post("/v1/ns/team.repo/sessions", json=report, headers=bearer("reader-token"))
    assert ok.status_code == 202
    refused = await gate.client.post("/v1/ns/other/sessions", json=report, headers=bearer("reader-token"))
    assert refused.status_code == 403
    missing = await gate.client.post("/v1/ns/team.repo/sessions", json=report)
    assert missing.status_code == 401
