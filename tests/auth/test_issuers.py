"""Issuers as a real gate process meets them: a dead or stalled one, config mistakes caught at start,
and the example config of the design."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.auth.issuer import AUDIENCE, GOOGLE, Issuer, KeyServer, google_claims, k8s_claims
from tests.auth.probe import bearer
from tests.gatefixture import free_port, gate_command, start_gate, write_config

ROOT = Path(__file__).resolve().parents[2]


def get(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/ns/team.a/actions/{'0' * 64}", headers=bearer(token), timeout=10)


def test_a_failing_issuer_does_not_take_the_others_down(tmp_path: Path) -> None:
    with KeyServer().running() as keys:
        stalled, dead, healthy = Issuer("https://stalled.example"), Issuer("https://dead.example"), Issuer(GOOGLE)
        keys.stall.add("stalled")
        rules = [{"subject": "*", "role": "reader"}]
        issuers = [
            {"issuer": stalled.name, "audiences": [AUDIENCE], "jwks_uri": keys.publish("stalled", stalled),
             "jwks_timeout_seconds": 1.5},
            {"issuer": dead.name, "audiences": [AUDIENCE], "jwks_uri": f"http://127.0.0.1:{free_port()}/jwks"},
            {"issuer": healthy.name, "audiences": [AUDIENCE], "jwks_uri": keys.publish("google", healthy)},
        ]
        with start_gate(tmp_path / "gate", {"auth": {"issuers": issuers, "rules": rules}}) as gate:
            slow: list[httpx.Response] = []
            waiting = threading.Thread(target=lambda: slow.append(
                get(gate.url, stalled.sign(k8s_claims(stalled.name, "a")))))
            waiting.start()
            time.sleep(0.3)  # the stalled issuer's fetch is in flight
            started = time.monotonic()
            assert get(gate.url, healthy.sign(google_claims("ci@p.iam.gserviceaccount.com"))).status_code == 404
            assert time.monotonic() - started < 1.0
            resp = get(gate.url, dead.sign(k8s_claims(dead.name, "a")))
            assert resp.status_code == 503
            assert resp.json() == {"error": "keys of issuer https://dead.example unavailable, try again later"}
            waiting.join(10)
            assert slow[0].status_code == 503
            # no storm: within jwks_refresh_interval_seconds the stalled issuer is not asked again
            assert get(gate.url, stalled.sign(k8s_claims(stalled.name, "b"))).status_code == 503
            assert keys.fetches["stalled"] == 1
        assert "keys of issuer https://stalled.example: GET" in gate.log()


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(gate_command("serve", "--config", str(config), "--port", str(free_port())),
                          capture_output=True, text=True, timeout=60)


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gocachegate: ") and message in lines[0], result.stderr


ISSUER = {"issuer": "https://prow.example/issuer", "audiences": [AUDIENCE]}


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"issuers": [ISSUER], "rules": [{"subject": "x", "role": "owner"}]},
         "config: auth.rules[0].role: Input should be 'reader', 'writer' or 'admin'"),
        ({"issuers": [ISSUER], "rules": [{"subject": "x", "role": "reader", "namespaces": ["team.[ab"]}]},
         "config: auth.rules[0].namespaces: bad glob 'team.[ab': '[' without a closing ']'"),
        ({"issuers": [ISSUER], "rules": [{"subject": "x", "role": "reader", "namespaces": ["team/a"]}]},
         "config: auth.rules[0].namespaces: bad namespace glob 'team/a'"),
        ({"issuers": [ISSUER], "rules": [{"subject": "repo:[org", "role": "reader"}]},
         "config: auth.rules[0].subject: bad glob 'repo:[org'"),
        ({"issuers": [{"issuer": "kubernetes/serviceaccount", "audiences": [AUDIENCE]}]},
         "config: auth.issuers[0]: issuer 'kubernetes/serviceaccount' must be an https URL (plain http only on "
         "loopback) for discovery, else give jwks_uri or jwks_file"),
        ({"issuers": [{**ISSUER, "jwks_uri": "http://keys.example/jwks"}]},
         "config: auth.issuers[0]: jwks_uri 'http://keys.example/jwks' must be an https URL"),
        ({"issuers": [ISSUER, ISSUER]}, "config: auth: issuer https://prow.example/issuer is listed twice"),
        ({"issuers": [ISSUER], "rules": [{"claims": {"repository": []}, "role": "reader"}]},
         "config: auth.rules[0].claims: claim repository: an empty list matches nothing"),
        ({"issuers": [{**ISSUER, "jwks_file": "/nonexistent/jwks.json"}]},
         "cannot start: auth.issuers[0].jwks_file: /nonexistent/jwks.json: No such file or directory"),
        ({"issuers": [{**ISSUER, "jwks_file": "@hmac"}]},
         "cannot start: auth.issuers[0].jwks_file: @hmac: no usable signing keys"),
        ({"issuers": [{**ISSUER, "jwks_file": "@text"}]}, "cannot start: auth.issuers[0].jwks_file: @text: not JSON"),
    ],
    ids=["unknown role", "unclosed bracket", "slash in namespace glob", "bad subject glob", "no keys source",
         "plain http keys", "issuer twice", "empty claim list", "missing jwks_file", "jwks_file without signing keys",
         "jwks_file not JSON"],
)
def test_config_mistakes_stop_the_gate_with_one_line(tmp_path: Path, auth: dict[str, Any], message: str) -> None:
    files = {"@hmac": json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}), "@text": "not json"}
    for issuer in auth.get("issuers", []):
        name = issuer.get("jwks_file")
        if name in files:
            issuer["jwks_file"] = str(tmp_path / name)
            (tmp_path / name).write_text(files[name])
            message = message.replace(name, str(tmp_path / name))
    result = serve_once(write_config(tmp_path, {"auth": auth}))
    assert_one_line_exit_2(result, message)


def design_example() -> str:
    """The config example of DESIGN.md, as docs/identity.md quotes it."""
    text = (ROOT / "docs" / "identity.md").read_text()
    match = re.search(r"<!-- design-example -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "docs/identity.md lost the design's example"
    return match.group(1)


def test_the_design_example_config_works(tmp_path: Path) -> None:
    """The example loads as written; run with real keys in place of its jwks_file and storage path, its
    three rules give the Prow presubmit, the postsubmit and the Google admin their rights."""
    example = tmp_path / "example.yaml"
    example.write_text(design_example())
    check = subprocess.run(gate_command("check-config", str(example)), capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "1 issuers, 3 rules" in check.stdout, check.stderr

    config = yaml.safe_load(design_example())
    [issuer_config] = config["auth"]["issuers"]
    prow = Issuer(issuer_config["issuer"])
    issuer_config["jwks_file"] = str(prow.write_jwks(tmp_path / "jwks.json"))
    config["storage"]["path"] = str(tmp_path / "gate" / "storage")
    # The admin's Google ID token: Google is one more issuer beside the example's.
    google = Issuer(GOOGLE)
    config["auth"]["issuers"].append({"issuer": GOOGLE, "audiences": issuer_config["audiences"],
                                      "jwks_file": str(google.write_jwks(tmp_path / "google.json"))})
    (tmp_path / "gate").mkdir()
    path = tmp_path / "gate" / "gate.yaml"
    path.write_text(yaml.safe_dump(config))
    audience = issuer_config["audiences"][0]
    presubmit = prow.sign(k8s_claims(prow.name, "presubmit-cache", audience=audience))
    postsubmit = prow.sign(k8s_claims(prow.name, "postsubmit-cache", audience=audience))
    admin = google.sign(google_claims("cache-admin@my-project.iam.gserviceaccount.com", audience=audience))
    with start_gate(tmp_path / "gate", config_file=path) as gate:
        def whoami(token: str) -> Any:
            return httpx.get(f"{gate.url}/v1/whoami", headers=bearer(token), timeout=10).json()

        assert whoami(presubmit)["role"] == "reader"
        assert whoami(postsubmit) == {"subject": "system:serviceaccount:test-pods:postsubmit-cache",
                                      "role": "writer", "namespaces": ["gardener.*"]}
        assert whoami(admin)["role"] == "admin"


def test_a_jwks_file_is_read_again_for_a_new_key(tmp_path: Path) -> None:
    """An air-gapped cluster's keys in a ConfigMap: the cluster rotates, the file changes, tokens of the
    new key get in once the refresh interval since the last read has passed."""
    prow = Issuer("https://prow.example/issuer")
    jwks = prow.write_jwks(tmp_path / "jwks.json")
    config = {"auth": {
        "issuers": [{"issuer": prow.name, "audiences": [AUDIENCE], "jwks_file": str(jwks),
                     "jwks_refresh_interval_seconds": 0.5}],
        "rules": [{"subject": "system:serviceaccount:test-pods:*", "role": "reader"}],
    }}
    with start_gate(tmp_path / "gate", config) as gate:
        prow.add_key("k2", "ec")
        token = prow.sign(k8s_claims(prow.name, "job"), kid="k2")
        time.sleep(0.5)
        assert get(gate.url, token).status_code == 401  # not in the file yet
        prow.write_jwks(jwks)
        time.sleep(0.5)
        assert get(gate.url, token).status_code == 404
