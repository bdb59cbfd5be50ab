"""The bench harness end to end on its cheapest scenario: ``--quick --only l1-warm``.

Real parts throughout: the go command, the helper, a gate process, the table and the JSON. It
checks the harness measures and reports, not the figures (those are noise on a shared machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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
