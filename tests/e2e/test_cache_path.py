"""The whole path with real parts: the go command, the helper, a gate process, local storage."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gatefixture import GateProcess, start_gate
from tests.gohelpers import Machine, write_module

pytestmark = pytest.mark.go


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateProcess]:
    with start_gate(tmp_path_factory.mktemp("gate")) as g:
        yield g


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_module(tmp_path_factory.mktemp("src") / "sample")


@pytest.fixture(scope="module")
def filled(gate: GateProcess, module_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Machine 1 builds and tests the module cold, filling namespace 'shared' on the gate."""
    m = Machine(tmp_path_factory.mktemp("machine1"), gate.url, GOCACHEGATE_NAMESPACE="shared")
    build = m.go("build", "-o", str(m.root / "app"), ".", cwd=module_dir).check()
    assert build.stats["puts"] > 0 and build.stats["uploads"] == build.stats["puts"]
    assert build.stats["hits"] == 0 and build.stats["upload_errors"] == 0
    test = m.go("test", "./...", cwd=module_dir).check()
    assert "(cached)" not in test.stdout
    return {"binary_sha": int(hashlib.sha256((m.root / "app").read_bytes()).hexdigest(), 16),
            "gets": build.stats["gets"]}


def test_fresh_machine_builds_from_the_gate(filled: dict[str, int], gate: GateProcess, module_dir: Path,
                                            tmp_path: Path) -> None:
    m = Machine(tmp_path, gate.url, GOCACHEGATE_NAMESPACE="shared")
    run = m.go("build", "-o", str(tmp_path / "app"), ".", cwd=module_dir).check()
    s = run.stats
    assert s["local_hits"] == 0
    assert s["remote_hits"] >= 0.9 * s["gets"], s
    assert s["corrupt"] == 0 and s["remote_errors"] == 0
    assert s["gets"] == s["hits"] + s["misses"] and s["hits"] == s["local_hits"] + s["remote_hits"]
    assert s["bytes_downloaded"] > 0
    assert int(hashlib.sha256((tmp_path / "app").read_bytes()).hexdigest(), 16) == filled["binary_sha"]


def test_test_results_come_back_cached(filled: dict[str, int], gate: GateProcess, module_dir: Path,
                                       tmp_path: Path) -> None:
    m = Machine(tmp_path, gate.url, GOCACHEGATE_NAMESPACE="shared")
    run = m.go("test", "./...", cwd=module_dir).check()
    lines = [line for line in run.stdout.splitlines() if line.startswith("ok")]
    assert len(lines) == 3 and all("(cached)" in line for line in lines), run.stdout
    assert run.stats["remote_hits"] > 0


def test_read_only_uploads_nothing(gate: GateProcess, module_dir: Path, tmp_path: Path) -> None:
    m = Machine(tmp_path, gate.url, GOCACHEGATE_NAMESPACE="readonly", GOCACHEGATE_READ_ONLY="1")
    run = m.go("build", "-o", str(tmp_path / "app"), ".", cwd=module_dir).check()
    assert run.stats["puts"] > 0 and run.stats["uploads"] == 0
    assert gate.entries("readonly") == 0


def test_parallel_go_commands_share_one_l1(filled: dict[str, int], gate: GateProcess, module_dir: Path,
                                           tmp_path: Path) -> None:
    """8 go commands at once on one fresh L1, all fetching the same entries from the gate and
    writing them into the same files: all succeed, all get the same binary, no torn files."""
    m = Machine(tmp_path, gate.url, GOCACHEGATE_NAMESPACE="shared")
    results: list[int] = []
    procs = [
        subprocess.Popen(["go", "build", "-o", str(tmp_path / f"app{i}"), "."], cwd=module_dir,
                         env={**m.env, "GOCACHEGATE_STATS_FILE": str(tmp_path / f"s{i}.json")},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        results.append(p.returncode)
    digests = {hashlib.sha256((tmp_path / f"app{i}").read_bytes()).digest() for i in range(8)}
    assert len(digests) == 1
    assert not list((tmp_path / "l1").glob("*/.tmp-*")), "temp files left behind"
    for i in range(8):
        s = json.loads((tmp_path / f"s{i}.json").read_text())
        assert s["corrupt"] == 0 and s["remote_errors"] == 0 and s["hits"] > 0, s


def test_gate_killed_mid_build_does_not_fail_it(module_dir: Path, tmp_path: Path) -> None:
    with start_gate(tmp_path / "gate") as g:
        m = Machine(tmp_path / "m", g.url, GOCACHEGATE_NAMESPACE="killed")
        killer = threading.Timer(1.0, lambda: g.proc.send_signal(signal.SIGKILL))
        killer.start()
        start = time.monotonic()
        run = m.go("build", "-o", str(tmp_path / "app"), ".", cwd=module_dir)
        killer.cancel()
        run.check()
        assert g.proc.wait(timeout=10) == -signal.SIGKILL
        assert time.monotonic() - start < 120
        assert (tmp_path / "app").exists()
