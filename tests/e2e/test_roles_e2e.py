"""Rights from the job's identity, end to end: the real go command, the helper with a projected
ServiceAccount token in a file, and a gate that trusts the cluster's issuer.

A postsubmit (writer) fills the cache. A presubmit (reader) then builds a changed tree: it is served
the unchanged packages from the gate, and writes nothing at all, even though its environment claims
a postsubmit with uploads on: the gate refuses, the helper keeps its puts local, the build passes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auth.issuer import Issuer, k8s_claims
from tests.auth.probe import storage_writes
from tests.gatefixture import GateProcess, start_gate
from tests.gohelpers import Machine, write_module

pytestmark = pytest.mark.go

ISSUER = "https://prow.example/issuer"
NAMESPACE = "example-org.example-repo"


@pytest.fixture(scope="module")
def prow() -> Issuer:
    return Issuer(ISSUER)


@pytest.fixture(scope="module")
def gate(prow: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateProcess]:
    directory = tmp_path_factory.mktemp("roles")
    config = {
        "auth": {
            "issuers": [{"issuer": ISSUER, "audiences": ["gocachegate"],
                         "jwks_file": str(prow.write_jwks(directory / "jwks.json"))}],
            "rules": [
                {"subject": "system:serviceaccount:test-pods:presubmit-cache", "role": "reader",
                 "namespaces": ["example-org.*"]},
                {"subject": "system:serviceaccount:test-pods:postsubmit-cache", "role": "writer",
                 "namespaces": ["example-org.*"]},
            ],
        }
    }
    with start_gate(directory / "gate", config) as g:
        yield g


def job(root: Path, gate: GateProcess, prow: Issuer, account: str, **env: str) -> Machine:
    """A Prow job pod: its projected token in a file, the Prow variables that name the namespace."""
    root.mkdir(parents=True)
    token = root / "token"
    token.write_text(prow.sign(k8s_claims(ISSUER, account)))
    return Machine(root, gate.url, GOCACHEGATE_TOKEN_FILE=str(token), REPO_OWNER="example-org",
                   REPO_NAME="example-repo", **env)


def test_postsubmit_fills_and_presubmit_only_reads(gate: GateProcess, prow: Issuer, tmp_path: Path) -> None:
    source = write_module(tmp_path / "src" / "sample")
    postsubmit = job(tmp_path / "postsubmit", gate, prow, "postsubmit-cache", JOB_TYPE="postsubmit")
    run = postsubmit.go("build", "-o", str(tmp_path / "app"), ".", cwd=source).check()
    assert run.stats["puts"] > 0 and run.stats["uploads"] == run.stats["puts"], run.stats
    stored = gate.entries(NAMESPACE)
    assert stored == run.stats["uploads"]

    changed = tmp_path / "pr" / "sample"
    shutil.copytree(source, changed)
    main = changed / "main.go"
    main.write_text(main.read_text().replace('fmt.Println(lib0.Shout0("hello"))', 'fmt.Println(lib0.Shout0("pr"))'))
    writes = storage_writes(gate.url)
    presubmit = job(tmp_path / "presubmit", gate, prow, "presubmit-cache",
                    JOB_TYPE="postsubmit", GOCACHEGATE_READ_ONLY="0")  # claims it all: the token decides
    run = presubmit.go("build", "-o", str(tmp_path / "pr-app"), ".", cwd=changed).check()
    s = run.stats
    assert s["remote_hits"] > 0 and s["puts"] > 0, s  # served the libraries, built the changed main
    assert s["uploads"] == 0 and s["bytes_uploaded"] == 0, s
    assert "refused an upload" in run.stderr
    assert storage_writes(gate.url) == writes
    assert gate.entries(NAMESPACE) == stored
