"""The helper's token sources: a static token, a file the kubelet rotates, and Google ID tokens from
google-auth against loopback stand-ins of Google (a service account key, the metadata server, and
Workload Identity Federation), the latter through the real helper into a real gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cacheprog.google_token import GoogleIDToken
from cacheprog.tokens import FileToken, StaticToken
from tests.auth.google_standin import GoogleStandIn, TlsInterceptor, service_account_key, wif_credentials
from tests.auth.issuer import GOOGLE, Issuer, k8s_claims
from tests.gatefixture import GateProcess, start_gate
from tests.helper.driver import Helper

EMAIL = "ci-writer@my-project.iam.gserviceaccount.com"
AUDIENCE = "gocachegate"
POOL = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/ci/providers/prow"


def test_static_token() -> None:
    assert StaticToken(" abc \n").token() == "abc"
    assert StaticToken("  ").token() is None


def rotate(directory: Path, token: str) -> None:
    """What the kubelet's atomic writer does: a new timestamped directory, then ``..data`` swapped to it."""
    fresh = directory / f"..{time.monotonic_ns()}"
    fresh.mkdir()
    (fresh / "token").write_text(token)
    link = directory / "..data_tmp"
    link.symlink_to(fresh.name)
    os.replace(link, directory / "..data")
    if not (directory / "token").is_symlink():
        (directory / "token").symlink_to("..data/token")


def test_file_token_follows_kubelet_rotation(tmp_path: Path) -> None:
    rotate(tmp_path, "first\n")
    source = FileToken(str(tmp_path / "token"))
    assert source.token() == "first"
    rotate(tmp_path, "second")
    assert source.token() == "first"  # looked at less than a second ago: not even a stat
    source.refresh()  # the gate said 401: look again at once
    assert source.token() == "second"
    rotate(tmp_path, "third")
    time.sleep(1.1)
    assert source.token() == "third"


def test_file_token_stats_at_most_once_a_second_and_reads_only_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text("t1")
    source = FileToken(str(path))
    assert source.token() == "t1"
    calls: list[str] = []
    real_open, real_stat = open, os.stat

    def counting_open(file: str, *args: object, **kwargs: object) -> object:
        calls.append("open")
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    def counting_stat(file: str) -> os.stat_result:
        calls.append("stat")
        return real_stat(file)

    monkeypatch.setattr("builtins.open", counting_open)
    monkeypatch.setattr(os, "stat", counting_stat)
    for _ in range(1000):  # a busy build's requests within a second: no system call at all
        assert source.token() == "t1"
    assert calls == []
    monkeypatch.setattr(FileToken, "_CHECK_EVERY_S", 0.0)
    for _ in range(3):  # looked at each time now, but the file is the same: never read again
        assert source.token() == "t1"
    assert calls == ["stat"] * 3


def test_file_token_missing_file_is_no_token(tmp_path: Path) -> None:
    source = FileToken(str(tmp_path / "absent"))
    assert source.token() is None


# -- Google ----------------------------------------------------------------------------------------


@dataclass
class Google:
    standin: GoogleStandIn
    workload: Issuer  # the Kubernetes issuer of the job's projected token
    directory: Path

    def key_file(self) -> Path:
        return service_account_key(self.standin, self.directory / "key.json")


@pytest.fixture
def google(tmp_path: Path) -> Iterator[Google]:
    workload = Issuer("https://prow.example/issuer")
    with GoogleStandIn(EMAIL, workload, POOL).running() as standin:
        yield Google(standin, workload, tmp_path)


def wait_for_warm_up() -> None:
    """GoogleIDToken fetches its first token on a thread of its own; wait for it."""
    for thread in threading.enumerate():
        if thread.name == "google-id-token":
            thread.join(30)


def test_google_token_is_refreshed_before_it_expires(google: Google, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google.key_file()))
    google.standin.lifetime = 3600
    source = GoogleIDToken(AUDIENCE)
    first = source.token()
    assert first and source.token() == first
    wait_for_warm_up()
    assert google.standin.calls == {"key": 1} and google.standin.audiences == [AUDIENCE]
    # within google-auth's refresh margin (3 min 45 s) of expiry: every use gets a new one
    google.standin.lifetime = 200
    source.refresh()
    second = source.token()
    assert second and second != first and google.standin.calls == {"key": 2}
    assert source.token() not in (first, second) and google.standin.calls == {"key": 3}


def test_google_failure_is_said_once_and_not_retried_until_refresh(
    google: Google, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    broken = google.directory / "federated.json"
    broken.write_text(json.dumps({  # no service_account_impersonation_url: no ID token to be had
        "type": "external_account", "audience": "x", "token_url": "http://127.0.0.1:1/v1/token",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "credential_source": {"file": "/t"}}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(broken))
    source = GoogleIDToken(AUDIENCE)
    wait_for_warm_up()
    assert source.token() is None and source.token() is None
    err = capfd.readouterr().err
    assert err.count("gocacheprog: no Google ID token:") == 1 and "impersonate" in err
    source.refresh()
    assert source.token() is None
    assert capfd.readouterr().err.count("no Google ID token") == 1


def test_google_auth_is_imported_only_when_used() -> None:
    code = (
        "import sys, time\n"
        "from cacheprog.remote import remote_for\n"
        "from cacheprog.config import load_config\n"
        "env = {'GOCACHEGATE_URL': 'http://127.0.0.1:9', 'GOCACHEGATE_TOKEN': 't'}\n"
        "remote_for(load_config([], env))\n"
        "print(any(m == 'google' or m.startswith('google.') for m in sys.modules))\n"
        "env = {'GOCACHEGATE_URL': 'http://127.0.0.1:9', 'GOCACHEGATE_AUTH': 'google'}\n"
        "start = time.perf_counter()\n"
        "remote_for(load_config([], env))\n"
        "print(time.perf_counter() - start)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"], "GCE_METADATA_IP": "127.0.0.1:9",
                              "GCE_METADATA_HOST": "127.0.0.1:9"}, check=True).stdout.split()
    assert out[0] == "False"
    assert float(out[1]) < 0.05  # google-auth loads on its own thread, not on the way to go's answers


def gate_trusting_google(directory: Path, standin: GoogleStandIn) -> dict[str, object]:
    return {
        "auth": {
            "issuers": [{"issuer": GOOGLE, "audiences": [AUDIENCE],
                         "jwks_file": str(standin.google.write_jwks(directory / "google-jwks.json"))}],
            "rules": [{"claims": {"email": EMAIL}, "role": "writer", "namespaces": ["team.*"]}],
        }
    }


def upload_through_helper(gate: GateProcess, directory: Path, **env: str) -> dict[str, object]:
    """One put through a real helper with GOCACHEGATE_AUTH=google; the helper's stats."""
    stats = directory / "stats.json"
    helper = Helper(directory / "l1", GOCACHEGATE_URL=gate.url, GOCACHEGATE_NAMESPACE="team.repo",
                    GOCACHEGATE_AUTH="google", GOCACHEGATE_AUDIENCE=AUDIENCE, GOCACHEGATE_STATS_FILE=str(stats),
                    **env)
    helper.send("put", os.urandom(32), b"an output built with a Google identity")
    assert "Err" not in helper.read()
    helper.close()
    result: dict[str, object] = json.loads(stats.read_text())
    return result


@pytest.mark.parametrize("source", ["service account key", "metadata server", "workload identity federation"])
def test_helper_writes_with_a_google_id_token(google: Google, tmp_path: Path, source: str) -> None:
    env: dict[str, str] = {"GCE_METADATA_IP": google.standin.url.removeprefix("http://"),
                           "GCE_METADATA_HOST": google.standin.url.removeprefix("http://")}
    with start_gate(tmp_path / "gate", gate_trusting_google(tmp_path, google.standin)) as gate:
        if source == "service account key":
            env["GOOGLE_APPLICATION_CREDENTIALS"] = str(google.key_file())
            stats = upload_through_helper(gate, tmp_path / "job", **env)
            expected = {"key": 1}
        elif source == "metadata server":
            stats = upload_through_helper(gate, tmp_path / "job", **env)
            expected = {"metadata": 1}
        else:
            projected = tmp_path / "token"
            projected.write_text(google.workload.sign(k8s_claims(google.workload.name, "ci", audience=POOL)))
            credentials = wif_credentials(google.standin, projected, tmp_path / "wif.json")
            interceptor = TlsInterceptor("iamcredentials.googleapis.com", google.standin.url, tmp_path)
            with interceptor.running() as proxy:
                stats = upload_through_helper(
                    gate, tmp_path / "job", GOOGLE_APPLICATION_CREDENTIALS=str(credentials), HTTPS_PROXY=proxy,
                    REQUESTS_CA_BUNDLE=str(interceptor.ca_file), NO_PROXY="127.0.0.1,localhost", **env)
            assert interceptor.tunnels == ["iamcredentials.googleapis.com:443"]
            expected = {"sts": 1, "generateIdToken": 1}
        assert stats["uploads"] == 1 and stats["upload_errors"] == 0, stats
        assert gate.entries("team.repo") == 1
        assert google.standin.calls == expected and google.standin.audiences[-1:] == [AUDIENCE]
        assert f"token accepted: issuer={GOOGLE}" in gate.log()
