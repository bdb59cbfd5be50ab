"""Health, readiness, metrics, sessions, and how errors look to a client."""

from __future__ import annotations

import shutil

import pytest

from server.entries import entry_key
from tests.gate.conftest import InProcess, entry_headers, new_action

pytestmark = pytest.mark.anyio


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 if absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample, _, rest = series.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if sample == name and got == want:
            return float(value)
    return 0.0


async def test_healthz_and_readyz(gate_app: InProcess) -> None:
    assert (await gate_app.client.get("/healthz")).json() == {"status": "ok"}
    ready = await gate_app.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "storage": "local"}


async def test_readyz_is_503_when_storage_is_gone(gate_app: InProcess) -> None:
    shutil.rmtree(gate_app.storage_path)
    resp = await gate_app.client.get("/readyz")
    assert resp.status_code == 503 and resp.json()["error"].startswith("storage (local) unavailable")
    assert (await gate_app.client.get("/healthz")).status_code == 200  # liveness does no I/O


async def test_readyz_is_503_once_draining(gate_app: InProcess) -> None:
    gate_app.app.state.lifecycle.draining = True
    resp = await gate_app.client.get("/readyz")
    assert resp.status_code == 503 and resp.json() == {"error": "shutting down"}


async def test_metrics_count_requests_hits_misses_puts_and_storage(gate_app: InProcess) -> None:
    body = b"metered" * 100
    action = new_action()
    path = f"/v1/ns/team.repo/actions/{action}"
    await gate_app.client.get(path)
    await gate_app.client.put(path, content=body, headers=entry_headers(body))
    await gate_app.client.put(path, content=body, headers=entry_headers(body))
    await gate_app.client.put(f"/v1/ns/team.repo/actions/{new_action()}", content=b"x", headers=entry_headers(b"y"))
    await gate_app.client.get(path, headers={"Accept-Encoding": "identity"})
    await gate_app.client.get("/no/such/route")
    resp = await gate_app.client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert metric(text, "gocachegate_requests_total", route="get_entry", code="404") == 1
    assert metric(text, "gocachegate_requests_total", route="get_entry", code="200") == 1
    assert metric(text, "gocachegate_requests_total", route="put_entry", code="201") == 1
    assert metric(text, "gocachegate_requests_total", route="unmatched", code="404") == 1
    assert metric(text, "gocachegate_cache_hits_total", namespace="team.repo") == 1
    assert metric(text, "gocachegate_cache_misses_total", namespace="team.repo") == 1
    for result, count in (("new", 1), ("present", 1), ("rejected", 1)):
        assert metric(text, "gocachegate_cache_puts_total", namespace="team.repo", result=result) == count
    assert metric(text, "gocachegate_cache_bytes_sent_total", namespace="team.repo") == len(body)
    assert metric(text, "gocachegate_cache_bytes_received_total", namespace="team.repo") == len(body)
    labels = {"backend": "local", "op": "write", "class": "A", "outcome": "ok"}
    assert metric(text, "gocachegate_storage_operations_total", **labels) == 1
    labels = {"backend": "local", "op": "read", "class": "B", "outcome": "ok"}
    assert metric(text, "gocachegate_storage_operations_total", **labels) == 1
    assert "gocachegate_storage_operation_seconds_bucket" in text
    assert "gocachegate_request_duration_seconds_bucket" in text


async def test_sessions_add_up_per_namespace(gate_app: InProcess) -> None:
    report = {
        "gets": 10,
        "hits": 7,
        "misses": 3,
        "remote_hits": 5,
        "bytes_downloaded": 1000,
        "remote_wait_ms": 12,
        "job_name": "pull-test",
        "pull_number": 42,
        "something_new": {"ignored": True},
    }
    for _ in range(2):
        resp = await gate_app.client.post("/v1/ns/team.repo/sessions", json=report)
        assert resp.status_code == 202 and resp.json() == {"status": "accepted"}
    text = (await gate_app.client.get("/metrics")).text
    assert metric(text, "gocachegate_sessions_total", namespace="team.repo") == 2
    assert metric(text, "gocachegate_session_counts_total", namespace="team.repo", field="hits") == 14
    assert metric(text, "gocachegate_session_counts_total", namespace="team.repo", field="bytes_downloaded") == 2000


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"gets": -1}', "body.gets: Input should be greater than or equal to 0"),
        (b'{"gets": "many"}', "body.gets: Input should be a valid integer"),
        (b'{"gets": 1', "body: invalid JSON"),
    ],
)
async def test_bad_session_reports_are_400_with_one_line(gate_app: InProcess, body: bytes, reason: str) -> None:
    resp = await gate_app.client.post(
        "/v1/ns/team.repo/sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"].startswith(reason) and "\n" not in resp.json()["error"]


async def test_unknown_routes_and_methods_answer_json(gate_app: InProcess) -> None:
    resp = await gate_app.client.get("/v2/anything")
    assert resp.status_code == 404 and resp.json() == {"error": "not found"}
    resp = await gate_app.client.delete(f"/v1/ns/team.repo/actions/{new_action()}")
    assert resp.status_code == 405 and resp.json() == {"error": "method not allowed"}


async def test_storage_errors_are_500_without_details(gate_app: InProcess) -> None:
    action = new_action()
    (gate_app.storage_path / entry_key("team.repo", action)).mkdir(parents=True)  # a directory where a file goes
    resp = await gate_app.client.get(f"/v1/ns/team.repo/actions/{action}")
    assert resp.status_code == 500 and resp.json() == {"error": "storage error"}
