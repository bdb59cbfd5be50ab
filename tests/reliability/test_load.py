"""64 clients against one gate for 15 s on each backend (the full minute is
``python -m tests.reliability.loadgen``): no 5xx, no transport error, every acknowledged put read
back whole, and the gate's memory bounded by what is in flight, not by what went through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import StartGate
from tests.emulator import start_emulator
from tests.gatefixture import GateProcess
from tests.reliability.loadgen import run_load

#: The gate's resident memory may not pass this: 64 bodies in flight at 1 MiB in memory each
#: (larger ones spool to disk), plus the interpreter and its libraries.
RSS_BOUND_MB = 450


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def loaded_gate(request: pytest.FixtureRequest, gate_factory: StartGate, tmp_path: Path) -> Iterator[GateProcess]:
    if request.param == "local":
        yield gate_factory()
        return
    with start_emulator(data_dir=tmp_path / "bucket") as emulator:
        yield gate_factory({"storage": {"backend": "gcs", "bucket": emulator.bucket}}, env=emulator.env())


def test_64_clients_mixed_load(loaded_gate: GateProcess) -> None:
    result = run_load(loaded_gate.url, loaded_gate.proc.pid, seconds=15, clients=64)
    summary: dict[str, Any] = result.summary()
    print("\n" + json.dumps(summary, indent=1))
    assert result.total > 200, summary
    assert result.server_errors == 0 and result.transport_errors == 0, summary
    assert result.acknowledged > 50 and not result.lost, summary
    for kind in ("hit", "miss", "put"):
        assert any(key.startswith(kind) for key in result.requests), f"no {kind} in {summary}"
    assert set(result.requests) <= {"hit 200", "miss 404", "put 201", "put 200"}, summary
    rss = summary["gate_rss_mb"]
    assert rss["peak"] < RSS_BOUND_MB, summary
    assert rss["last_third_max"] < rss["first_third_max"] * 1.5 + 50, f"memory grows with requests: {rss}"
