"""The self-contained helper (deploy/bundle/build.sh) does for go what the venv's helper does,
with no Python on the machine: built with PyInstaller in seconds, then driven by the real go
command against a real gate."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.tools import DEPLOY
from tests.gatefixture import GateProcess
from tests.gohelpers import Machine, go_binary, write_module

pytestmark = pytest.mark.go


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("PyInstaller") is None:
        reason = "PyInstaller is not installed: run scripts/tools/pyinstaller.sh"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {reason}", pytrace=False)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bundle") / "gocacheprog"
    build = subprocess.run([str(DEPLOY / "bundle" / "build.sh"), str(out)], capture_output=True, text=True,
                           timeout=300, check=False)
    assert build.returncode == 0, build.stderr
    return out / "gocacheprog"


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_module(tmp_path_factory.mktemp("src") / "sample")


def _machine(root: Path, bundle: Path, url: str | None = None, **env: str) -> Machine:
    """A job container without Python: go's own directory is all there is on PATH. The remote timeout
    is generous because this tests the bundle's client, not how the helper copes with a slow gate on
    a machine loaded by other work (that gives misses, by design)."""
    machine = Machine(root, url, GOCACHEPROG=str(bundle), GOCACHEGATE_TIMEOUT="60", **env)
    machine.env["PATH"] = str(Path(go_binary()).parent)
    return machine


def test_bundle_carries_its_own_python(bundle: Path) -> None:
    internal = bundle.parent / "_internal"
    assert any(internal.glob("libpython3*.so*")), sorted(p.name for p in internal.iterdir())
    version = subprocess.run([str(bundle), "--version"], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/nonexistent"}, check=False)
    assert version.returncode == 0 and "gocacheprog" in version.stdout + version.stderr


def test_go_builds_through_the_bundle_and_the_gate(bundle: Path, gate: GateProcess, module_dir: Path,
                                                   tmp_path: Path) -> None:
    first = _machine(tmp_path / "m1", bundle, gate.url, GOCACHEGATE_NAMESPACE="bundle")
    cold = first.go("build", "-o", str(tmp_path / "app1"), ".", cwd=module_dir).check()
    assert cold.stats["puts"] > 0 and cold.stats["uploads"] > 0, (cold.stats, cold.stderr)

    # A fresh job pod: empty L1, entries come from the gate through the bundle's HTTP client.
    second = _machine(tmp_path / "m2", bundle, gate.url, GOCACHEGATE_NAMESPACE="bundle")
    fresh = second.go("build", "-o", str(tmp_path / "app2"), ".", cwd=module_dir).check()
    assert fresh.stats["remote_hits"] >= 0.5 * fresh.stats["gets"] > 0, (fresh.stats, fresh.stderr[-2000:])
    assert fresh.stats["corrupt"] == 0, fresh.stats
    digest = [hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("app1", "app2")]
    assert digest[0] == digest[1]


def test_bundle_carries_google_auth(bundle: Path, gate: GateProcess, tmp_path: Path) -> None:
    """GOCACHEGATE_AUTH=google imports google-auth inside the bundle. With a credential file that is
    not there it fails on the file, offline, after the imports; the get is a miss, nothing breaks."""
    missing = tmp_path / "no-such-credentials.json"
    env = {"GOCACHEGATE_URL": gate.url, "GOCACHEGATE_AUTH": "google", "GOCACHEGATE_DIR": str(tmp_path / "l1"),
           "GOOGLE_APPLICATION_CREDENTIALS": str(missing), "PATH": "/nonexistent",
           "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}
    get = {"ID": 1, "Command": "get", "ActionID": base64.b64encode(hashlib.sha256(b"a").digest()).decode()}
    requests = (json.dumps(get) + "\n" + json.dumps({"ID": 2, "Command": "close"}) + "\n").encode()
    helper = subprocess.run([str(bundle)], input=requests, capture_output=True, timeout=60, env=env, check=False)
    answers = [json.loads(line) for line in helper.stdout.splitlines()]
    stderr = helper.stderr.decode(errors="replace")
    assert helper.returncode == 0, stderr
    assert answers[0]["KnownCommands"] == ["get", "put", "close"]
    assert {"ID": 1, "Miss": True}.items() <= answers[1].items(), answers
    assert "No module named" not in stderr, stderr
    assert "no Google ID token" in stderr and str(missing) in stderr, stderr
