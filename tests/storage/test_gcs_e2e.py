"""The real go command through the helper and a gate whose storage is GCS (the emulator): a cold
build fills the bucket, and a machine with an empty local cache is then served from it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator import Emulator, start_emulator
from tests.gatefixture import GateProcess, start_gate
from tests.gohelpers import Machine, write_module

pytestmark = [pytest.mark.go, pytest.mark.gcs]

NS = "e2e-gcs"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with start_emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def gate(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateProcess]:
    config = {"storage": {"backend": "gcs", "bucket": emulator.bucket}}
    with start_gate(tmp_path_factory.mktemp("gate"), config, env=emulator.env()) as g:
        yield g


def test_cold_build_fills_the_bucket_and_a_fresh_machine_is_served_from_it(
    gate: GateProcess, emulator: Emulator, tmp_path: Path
) -> None:
    module = write_module(tmp_path / "src" / "sample")

    first = Machine(tmp_path / "machine1", gate.url, GOCACHEGATE_NAMESPACE=NS)
    cold = first.go("build", "-o", str(first.root / "app"), ".", cwd=module).check()
    puts, uploads = cold.stats["puts"], cold.stats["uploads"]
    assert cold.stats["hits"] == 0 and puts > 0
    # On a loaded machine the helper may give up on an upload that the gate still finishes.
    assert uploads + cold.stats["upload_errors"] == puts and uploads >= 0.95 * puts, cold.stats
    objects = emulator.objects(f"ac/{NS}/")
    assert uploads <= len(objects) <= puts
    assert all(obj.get("customTime") and obj["metadata"]["output_id"] for obj in objects)

    served = len([r for r in emulator.requests() if r.kind == "media"])
    # One by one, without the prefetch (tests/prefetch counts its reads): one GCS read per hit.
    fresh = Machine(tmp_path / "machine2", gate.url, GOCACHEGATE_NAMESPACE=NS, GOCACHEGATE_PREFETCH="0")
    warm = fresh.go("build", "-o", str(fresh.root / "app"), ".", cwd=module).check()
    stats = warm.stats
    assert stats["local_hits"] == 0 and stats["corrupt"] == 0 and stats["remote_errors"] == 0
    assert stats["remote_hits"] >= 0.9 * stats["gets"], stats
    media = [r for r in emulator.requests() if r.kind == "media"][served:]
    assert len([r for r in media if r.status == 200]) == stats["remote_hits"]  # one GCS read per hit
    assert len(objects) <= len(emulator.objects(f"ac/{NS}/")) <= len(objects) + stats["uploads"]

    binaries = [hashlib.sha256((m.root / "app").read_bytes()).digest() for m in (first, fresh)]
    assert binaries[0] == binaries[1]
