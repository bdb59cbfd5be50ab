"""The gate on Workload Identity Federation, exactly as deploy/kustomize/overlays/wif sets it up.

google-auth in a real gate process reads the deployed ``external_account`` credential file (only
its endpoints moved to loopback stand-ins for Google's STS and IAM Credentials), takes the
"projected ServiceAccount token" from the file it names, trades it for a federated token,
impersonates the gate's Google service account, and calls the storage emulator with that access
token: a recording proxy in front of the emulator shows the bearer every storage call carried.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.deploy.conftest import Rendered
from tests.deploy.standins import GoogleIdentity, RecordingProxy, serve
from tests.deploy.tools import find
from tests.emulator import Emulator, start_emulator
from tests.gatefixture import GateProcess, start_gate

pytestmark = pytest.mark.gcs

WRITER_TOKEN = "wif-test-writer-token"
NAMESPACE = "example-org.example-repo"


@dataclass
class Deployed:
    """What the wif overlay says, read from the rendered manifests."""

    credentials: dict[str, Any]  # credential-configuration.json
    token_audience: str  # of the projected token volume
    subject: str  # system:serviceaccount:NS:NAME of the gate's pods
    gate_config: dict[str, Any]


@pytest.fixture(scope="module")
def deployed(overlays: dict[str, Rendered]) -> Deployed:
    rendered = overlays["wif"]
    deployment = find(rendered.docs, "Deployment", "gocachegate")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    path = Path(env["GOOGLE_APPLICATION_CREDENTIALS"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = volumes[mounts[str(path.parent)]]["configMap"]["name"]
    credentials = json.loads(find(rendered.docs, "ConfigMap", config_map)["data"][path.name])
    token_volume = volumes[mounts[str(Path(credentials["credential_source"]["file"]).parent)]]
    [source] = token_volume["projected"]["sources"]
    subject = f"system:serviceaccount:{deployment['metadata']['namespace']}:{pod['serviceAccountName']}"
    return Deployed(credentials, source["serviceAccountToken"]["audience"], subject, rendered.gate_config())


@dataclass
class Cluster:
    """The test's stand-in for the kubelet: an issuer key and the projected token file it rotates."""

    key: rsa.RSAPrivateKey
    issuer: str
    audience: str
    subject: str
    token_file: Path

    def project(self) -> str:
        """Write a fresh ServiceAccount token as the kubelet does, and return it."""
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.subject, "aud": [self.audience], "iat": now, "nbf": now,
                  "exp": now + 3600, "jti": hashlib.sha256(str(time.perf_counter_ns()).encode()).hexdigest()}
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "cluster-key"})
        self.token_file.write_text(token)
        return token


@dataclass
class WifSetup:
    gate: GateProcess
    identity: GoogleIdentity
    proxy: RecordingProxy
    cluster: Cluster
    emulator: Emulator
    deployed: Deployed


@pytest.fixture
def wif(deployed: Deployed, tmp_path: Path) -> Iterator[WifSetup]:
    issuer = deployed.gate_config["auth"]["issuers"][0]["issuer"]  # the build cluster's
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cluster = Cluster(key, issuer, deployed.token_audience, deployed.subject, tmp_path / "token")
    cluster.project()
    identity = GoogleIdentity(issuer, key.public_key(), deployed.credentials["audience"])
    with ExitStack() as stack:
        emulator = stack.enter_context(start_emulator())
        proxy = RecordingProxy(emulator.url)
        proxy_url = stack.enter_context(serve(proxy.handler()))
        google = stack.enter_context(serve(identity.handler()))

        # The deployed credential file, with Google's hosts swapped for the stand-in's and the token
        # path for this test's: scheme, host and port change, every path and field stays as deployed.
        credentials = dict(deployed.credentials)
        credentials["token_url"] = _rehost(credentials["token_url"], google)
        credentials["service_account_impersonation_url"] = _rehost(
            credentials["service_account_impersonation_url"], google
        )
        credentials["credential_source"] = {**credentials["credential_source"], "file": str(cluster.token_file)}
        credentials_file = tmp_path / "credential-configuration.json"
        credentials_file.write_text(json.dumps(credentials))

        # The deployed storage section (gcs, its project) on the emulator's bucket; a static writer
        # token stands in for the jobs, whose side tests/deploy/test_prow_jobs.py covers.
        config = {
            "server": {"host": "127.0.0.1"},
            "storage": {**deployed.gate_config["storage"], "bucket": emulator.bucket},
            "auth": {"static_tokens": [{"sha256": hashlib.sha256(WRITER_TOKEN.encode()).hexdigest(),
                                         "name": "wif-test", "role": "writer"}]},
        }
        env = {"GOOGLE_APPLICATION_CREDENTIALS": str(credentials_file), "STORAGE_EMULATOR_HOST": proxy_url,
               "GOOGLE_CLOUD_PROJECT": "", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        gate = stack.enter_context(start_gate(tmp_path / "gate", config, env=env))
        yield WifSetup(gate, identity, proxy, cluster, emulator, deployed)


def _rehost(url: str, base: str) -> str:
    new = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(scheme=new.scheme, netloc=new.netloc))


def _put_and_get(gate: GateProcess, body: bytes) -> None:
    action = hashlib.sha256(body + b"action").hexdigest()
    output = hashlib.sha256(body).hexdigest()
    headers = {"Authorization": f"Bearer {WRITER_TOKEN}"}
    url = f"{gate.url}/v1/ns/{NAMESPACE}/actions/{action}"
    put = httpx.put(url, content=body, headers={**headers, "X-Go-Output-Id": output, "X-Go-Size": str(len(body))},
                    timeout=30)
    assert put.status_code == 201, (put.status_code, put.text, gate.log()[-3000:])
    got = httpx.get(url, headers=headers, timeout=30)
    assert got.status_code == 200 and got.content == body, (got.status_code, gate.log()[-3000:])


def test_gate_reaches_storage_with_the_federated_identity(wif: WifSetup) -> None:
    _put_and_get(wif.gate, b"compiled by a job\n" * 64)
    ready = httpx.get(f"{wif.gate.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text

    token = wif.cluster.token_file.read_text()
    sts = [c for c in wif.identity.calls if c.path == "/v1/token"]
    iam = [c for c in wif.identity.calls if c.path.endswith(":generateAccessToken")]
    assert sts and all(c.status == 200 for c in sts), wif.identity.calls
    assert {c.subject_token for c in sts} == {token}
    assert {c.subject for c in sts} == {wif.deployed.subject}
    # Impersonation of exactly the account the deployed file names, with what STS handed out.
    account = wif.deployed.credentials["service_account_impersonation_url"].split("/serviceAccounts/")[1]
    assert iam and {f"{c.service_account}:generateAccessToken" for c in iam} == {account}
    assert all(c.status == 200 and c.bearer is not None and wif.identity.subject_of(c.bearer) == wif.deployed.subject
               for c in iam)
    # Nothing else of Google's was asked for: no Resource Manager project lookup, no metadata server.
    assert {c.path for c in wif.identity.calls} == {"/v1/token", iam[0].path}

    seen = wif.proxy.seen()
    uploads = [r for r in seen if r.path.startswith("/upload/")]
    downloads = [r for r in seen if "alt=media" in r.path or r.path.startswith("/download/")]
    assert uploads and downloads, seen
    bearers = {r.authorization for r in seen}
    assert bearers and all(b is not None and b.removeprefix("Bearer ") in wif.identity.access_tokens
                           for b in bearers), bearers


def test_rotated_projected_token_is_read_again(wif: WifSetup) -> None:
    """The kubelet replaces the token file long before it expires; google-auth must use the new one."""
    _put_and_get(wif.gate, b"first\n")
    rotated = wif.cluster.project()
    _put_and_get(wif.gate, b"second\n")
    sts = [c for c in wif.identity.calls if c.path == "/v1/token"]
    assert sts[-1].subject_token == rotated and sts[0].subject_token != rotated


def test_a_token_for_another_audience_gets_no_access(wif: WifSetup) -> None:
    """The projected token's audience is what ties it to this provider; a wrong one is refused."""
    wif.cluster.audience = "gocachegate"  # e.g. the job token's audience by mistake
    wif.cluster.project()
    action = hashlib.sha256(b"x").hexdigest()
    put = httpx.put(f"{wif.gate.url}/v1/ns/{NAMESPACE}/actions/{action}", content=b"y",
                    headers={"Authorization": f"Bearer {WRITER_TOKEN}",
                             "X-Go-Output-Id": hashlib.sha256(b"y").hexdigest(), "X-Go-Size": "1"}, timeout=30)
    assert put.status_code >= 500, put.text
    assert any(c.path == "/v1/token" and c.status == 400 for c in wif.identity.calls)
    assert not wif.emulator.object_names()
