"""Identity failing mid-run, with real signed tokens and a real gate: the token file rotated, the
token expired, the file removed. Uploads and remote hits go on while a valid token is at hand;
without one the helper stops asking the gate (one line on stderr) and the build goes on locally.
And no token ever shows in a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.issuer import AUDIENCE, Issuer, k8s_claims
from tests.conftest import StartGate
from tests.gatefixture import GateProcess
from tests.gohelpers import Machine
from tests.helper.driver import Helper, action
from tests.reliability.support import Reference, digest

ISSUER = "https://prow.example/issuer"
WRITER = "postsubmit-cache"
ADMIN_TOKEN = "admin-break-glass-7f3c1e9b"
NS = "tokens"


@pytest.fixture
def issuer() -> Issuer:
    return Issuer(ISSUER)


@pytest.fixture
def gate(gate_factory: StartGate, issuer: Issuer, tmp_path: Path) -> Iterator[GateProcess]:
    jwks = issuer.write_jwks(tmp_path / "jwks.json")
    yield gate_factory({
        "server": {"log_level": "debug", "access_log": True},
        "auth": {
            "issuers": [{"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": str(jwks), "leeway_seconds": 0}],
            "rules": [{"subject": f"system:serviceaccount:test-pods:{WRITER}", "role": "writer"}],
            "static_tokens": [{"sha256": hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(), "name": "breakglass",
                               "role": "admin"}],
        },
    })


def token(issuer: Issuer, lifetime: int) -> str:
    return issuer.sign(k8s_claims(ISSUER, WRITER, lifetime=lifetime))


def rotate(path: Path, value: str) -> None:
    """Replace the file in one step, as the kubelet swaps a projected token."""
    tmp = path.with_suffix(".new")
    tmp.write_text(value)
    os.replace(tmp, path)


def stored(gate: GateProcess, action_hex: str) -> bool:
    resp = httpx.get(f"{gate.url}/v1/ns/{NS}/actions/{action_hex}",
                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert resp.status_code in (200, 404), resp.text
    return resp.status_code == 200


def wait_stored(gate: GateProcess, action_hex: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not stored(gate, action_hex):
        assert time.monotonic() < deadline, f"{action_hex[:12]} never reached the gate"
        time.sleep(0.05)


def remote_only_entry(gate: GateProcess, n: int) -> bytes:
    """An entry the gate has and the helper's L1 does not."""
    body = f"remote entry {n}\n".encode() * 100
    resp = httpx.put(f"{gate.url}/v1/ns/{NS}/actions/{action(n).hex()}", content=body, timeout=10,
                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Go-Size": str(len(body)),
                              "X-Go-Output-Id": hashlib.sha256(body).hexdigest()})
    assert resp.status_code == 201, resp.text
    return body


def helper(tmp_path: Path, gate: GateProcess, token_file: Path) -> Helper:
    return Helper(tmp_path / "l1", GOCACHEGATE_URL=gate.url, GOCACHEGATE_NAMESPACE=NS,
                  GOCACHEGATE_TOKEN_FILE=str(token_file), GOCACHEGATE_STATS_FILE=str(tmp_path / "stats.json"))


def stats(tmp_path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((tmp_path / "stats.json").read_text())
    return loaded


def test_token_rotated_before_it_expires_keeps_the_gate(gate: GateProcess, issuer: Issuer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(token(issuer, lifetime=4))
    remote_body = remote_only_entry(gate, 100)
    h = helper(tmp_path, gate, token_file)
    h.send("put", action(1), b"first output\n" * 50)
    assert h.read()["DiskPath"]
    wait_stored(gate, action(1).hex())
    rotate(token_file, token(issuer, lifetime=3600))  # the kubelet renews ahead of expiry
    time.sleep(4.5)  # the first token is expired now
    h.send("put", action(2), b"second output\n" * 50)
    assert h.read()["DiskPath"]
    wait_stored(gate, action(2).hex())
    h.send("get", action(100))
    assert Path(h.read()["DiskPath"]).read_bytes() == remote_body
    h.close()
    s = stats(tmp_path)
    assert s["uploads"] == 2 and s["remote_hits"] == 1 and s["remote_errors"] == s["upload_errors"] == 0, s
    assert "refused" not in h.stderr()


def test_token_file_removed_mid_run_turns_the_gate_off(gate: GateProcess, issuer: Issuer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(token(issuer, lifetime=3600))
    remote_only_entry(gate, 100)
    h = helper(tmp_path, gate, token_file)
    h.send("put", action(1), b"first output\n" * 50)
    assert h.read()["DiskPath"]
    wait_stored(gate, action(1).hex())
    token_file.unlink()
    time.sleep(1.2)  # the helper looks at the file at most once a second
    h.send("put", action(2), b"second output\n" * 50)
    assert h.read()["DiskPath"]  # stored locally whatever the gate says
    deadline = time.monotonic() + 10
    while "refused the token" not in (err := _stderr_so_far(h)) and time.monotonic() < deadline:
        time.sleep(0.05)
    h.send("get", action(100))
    assert h.read()["Miss"] is True  # the gate is not asked again in this run
    h.close()
    s = stats(tmp_path)
    assert s["puts"] == 2 and s["uploads"] == 1 and s["remote_hits"] == 0, s
    assert not stored(gate, action(2).hex())
    assert (err + h.stderr()).count("refused the token") == 1


def _stderr_so_far(h: Helper) -> str:
    """What the helper wrote to stderr until now, without waiting for it to exit."""
    assert h.proc.stderr is not None
    os.set_blocking(h.proc.stderr.fileno(), False)
    chunk = h.proc.stderr.read() or b""
    os.set_blocking(h.proc.stderr.fileno(), True)
    return chunk.decode(errors="replace")


@pytest.mark.go
def test_token_expiring_mid_build_and_no_token_in_any_log(gate: GateProcess, issuer: Issuer,
                                                          reference: Reference, tmp_path: Path) -> None:
    """A token that expires a couple of seconds into a cold build and is never renewed: the build
    succeeds with the reference binary; the gate stops being asked once it answers 401 twice. Then
    every log of the run (gate at debug with access log, helper and go output) is searched for
    the tokens used."""
    token_file = tmp_path / "token"
    short = token(issuer, lifetime=2)
    token_file.write_text(short)
    machine = Machine(tmp_path / "m", gate.url, GOCACHEGATE_NAMESPACE=NS, GOCACHEGATE_TOKEN_FILE=str(token_file),
                      GOCACHEGATE_VERBOSE="1")
    run = machine.go("build", "-o", str(tmp_path / "app"), ".", cwd=reference.module).check()
    assert digest(tmp_path / "app") == reference.binary_sha
    s = run.stats
    assert run.seconds > 3, "the build ended before the token expired: nothing was tested"
    assert 0 < s["uploads"] < s["puts"], s
    assert run.stderr.count("refused the token") == 1, run.stderr
    assert httpx.get(f"{gate.url}/v1/whoami", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    assert httpx.get(f"{gate.url}/v1/whoami", headers={"Authorization": f"Bearer {short}"}).status_code == 401

    logs = {"gate": gate.log(), "go stderr": run.stderr, "go stdout": run.stdout}
    assert "401" in logs["gate"] and "GET /v1/ns/" in logs["gate"], "the gate log should show the requests"
    secrets = {"jwt": short, "jwt signature": short.rsplit(".", 1)[1], "admin token": ADMIN_TOKEN}
    for where, text in logs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in the {where}"
