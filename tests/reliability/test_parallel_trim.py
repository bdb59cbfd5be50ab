"""8 go commands at once on one L1 and one gate while the L1 is being trimmed under them.

The L1 starts with every entry of the build, all two hours old (fair game for the trim), and half
of the action records removed (those come from the gate, written into L1 by 8 helpers at once).
A trimmer deletes old files in a loop the whole time, besides each helper's own trim at start.
Every command must succeed with the reference binary, and L1 must hold no torn or misnamed file.
(tests/e2e/test_cache_path.py has 8 commands on a fresh L1 without a trim.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cacheprog.l1 import L1
from tests.conftest import StartGate
from tests.gohelpers import Machine, go_binary
from tests.reliability.support import Reference, check_l1, digest, fill_gate, l1_entries

pytestmark = pytest.mark.go


def test_eight_go_commands_share_one_l1_while_it_is_trimmed(reference: Reference, gate_factory: StartGate,
                                                            tmp_path: Path) -> None:
    gate = gate_factory()
    fill_gate(gate.url, "trim", reference.l1)
    l1 = tmp_path / "l1"
    shutil.copytree(reference.l1, l1)
    for entry in l1_entries(l1)[::2]:
        (l1 / entry.action[:2] / f"{entry.action}-a").unlink()
    two_hours_ago = time.time() - 7200
    for path in l1.rglob("*"):
        if path.is_file():
            os.utime(path, (two_hours_ago, two_hours_ago))
    (l1 / "trim.stamp").unlink(missing_ok=True)

    machine = Machine(tmp_path / "m", gate.url, GOCACHEGATE_NAMESPACE="trim", GOCACHEGATE_DIR=str(l1),
                      GOCACHEGATE_L1_MAX_BYTES="1")
    done = threading.Event()
    freed = 0

    def trim_in_a_loop() -> None:
        nonlocal freed
        while not done.is_set():
            freed += L1(str(l1), max_bytes=1).trim()
            time.sleep(0.01)

    trimmer = threading.Thread(target=trim_in_a_loop, daemon=True)
    trimmer.start()
    try:
        procs = [
            subprocess.Popen([go_binary(), "build", "-o", str(tmp_path / f"app{i}"), "."], cwd=reference.module,
                             env={**machine.env, "GOCACHEGATE_STATS_FILE": str(tmp_path / f"s{i}.json")},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(8)
        ]
        errors = [p.communicate(timeout=600)[1].decode() for p in procs]
    finally:
        done.set()
        trimmer.join(30)
    for p, err in zip(procs, errors, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert {digest(tmp_path / f"app{i}") for i in range(8)} == {reference.binary_sha}
    assert freed > 0, "the trim had nothing to do: the test tested nothing"
    check_l1(l1)
