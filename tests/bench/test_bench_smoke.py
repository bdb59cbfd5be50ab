"""The bench harness end to end on its cheapest scenario: ``--quick --only l1-warm``.

Real parts throughout: the go command, the helper, a gate process, the table and the JSON. It
checks the harness measures and reports, not the figures (those are noise on a shared machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.go

ROOT = Path(__file__).resolve().parents[2]


def test_quick_l1_warm_measures_every_case(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "l1-warm", "--json", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    document = json.loads(results.read_text())
    rows = document["rows"]
    assert [row["case"] for row in rows] == [
        "go build (hello world): helper, L1 only",
        "go build (hello world): helper + gate URL, L1 warm",
        "gocacheprog start to handshake",
    ]
    for row in rows:
        assert row["error"] is None, row
        assert row["ratio"] > 0 and len(row["series"]["values"]) >= 3, row
        assert row["reference_series"]["median"] > 0, row
    builds = rows[:2]
    assert all(row["target"] == "<= 1.25" and isinstance(row["met"], bool) for row in builds)
    assert all(row["notes"]["local_hits"] == row["notes"]["gets"] > 0 for row in builds), builds
    assert document["versions"]["go"].startswith("go1.")
    disk = document["machine"]["disk"]  # the filesystem the disk rows ran on: TMPDIR's
    mount = disk.split(" on ", 1)[1].split(")", 1)[0]
    assert os.path.realpath(tempfile.gettempdir()).startswith(mount), disk
    table = proc.stdout
    assert "| l1-warm | go build (hello world): helper, L1 only |" in table
    assert "- mode: quick" in table


def test_unknown_scenario_is_refused_with_the_known_names() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench", "--only", "cold,nosuch"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown scenario nosuch" in proc.stderr and "remote-warm-latency" in proc.stderr


def _running_in(directory: Path) -> dict[int, str]:
    """The processes whose command line names a path inside ``directory``: pid -> command line."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone, or not a process
        if f"{directory}/" in cmdline:
            found[int(proc.name)] = cmdline
    return found


def test_sigterm_stops_the_servers_and_removes_the_scratch_area(tmp_path: Path) -> None:
    """Stopped with SIGTERM halfway (by a person, or a CI timeout), a run leaves no gate running and
    no scratch area behind: the bench's SIGTERM goes through its ``finally`` blocks, as Ctrl-C does."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--only", "l1-warm", "--json", str(tmp_path / "results.json")],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while not any("gocachegate serve" in line for line in _running_in(scratch).values()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run started no gate in its scratch area"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
        assert _running_in(scratch) == {}
        assert list(scratch.iterdir()) == []
    finally:  # what a failure left running
        if proc.poll() is None:
            proc.kill()
        for pid in _running_in(scratch):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
