"""The local cache (L1) cannot be written: a full disk (a 2 MB tmpfs) or a read-only directory.

go ignores most failed cache puts, but not all (some fail the build: a read-only GOCACHE makes
go's own cache fail at once). So once L1 cannot be written the helper keeps the rest of the go
command's entries in a scratch directory removed at close, says so in one line on stderr, and go
gets every answer a working cache would give; nothing is kept for the next command. Only when
that fails too does a put get ``Err``, as go's own cache would on the same full disk.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import StartGate
from tests.gohelpers import Machine
from tests.reliability.support import Reference, digest, fill_gate

pytestmark = pytest.mark.go


@contextmanager
def small_fs(path: Path, *, size: str = "2m", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (read-only if asked); skipped where mount is not
    permitted, except under CI, whose runner is root and must run this."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}"
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must run this: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_l1_on_a_full_disk_degrades_like_gos_own_cache(reference: Reference, gate_factory: StartGate,
                                                          tmp_path: Path) -> None:
    gate = gate_factory()
    fill_gate(gate.url, "full", reference.l1)  # remote hits that cannot land in L1 either
    with small_fs(tmp_path / "native-cache") as gocache:
        native = Machine(tmp_path / "native").go("build", "-o", str(tmp_path / "native.bin"), ".",
                                                 cwd=reference.module, GOCACHEPROG="", GOCACHE=str(gocache))
    with small_fs(tmp_path / "l1"):
        machine = Machine(tmp_path / "m", gate.url, GOCACHEGATE_NAMESPACE="full", GOCACHEGATE_DIR=str(tmp_path / "l1"))
        run = machine.go("build", "-o", str(tmp_path / "app"), ".", cwd=reference.module)
        assert not list((tmp_path / "l1").glob("*/.tmp-*")), "temp files left on the full disk"
    assert native.returncode == 0, f"go's own cache on a full disk: {native.stderr[-2000:]}"
    run.check()
    assert digest(tmp_path / "app") == reference.binary_sha
    lines = [line for line in run.stderr.splitlines() if line.startswith("gocacheprog:")]
    assert len(lines) == 1 and "local cache not writable" in lines[0], run.stderr
    assert "No space left on device" in lines[0] and "scratch" in lines[0]
    s = run.stats
    assert s["gets"] == s["hits"] + s["misses"] and s["corrupt"] == 0 and s["remote_hits"] > 0, s
    scratch = re.search(r"entries in (\S+) until it ends", lines[0])
    assert scratch is not None and not Path(scratch[1]).exists(), "the scratch directory was left behind"


def test_read_only_l1_degrades_to_pass_through(reference: Reference, tmp_path: Path) -> None:
    l1 = tmp_path / "l1"
    if os.geteuid() == 0:
        mounted = small_fs(l1, read_only=True)
    else:
        l1.mkdir()
        l1.chmod(0o555)
        mounted = _nothing(l1)
    with mounted:
        machine = Machine(tmp_path / "m", GOCACHEGATE_DIR=str(l1))
        run = machine.go("build", "-o", str(tmp_path / "app"), ".", cwd=reference.module)
    run.check()
    assert digest(tmp_path / "app") == reference.binary_sha
    lines = [line for line in run.stderr.splitlines() if line.startswith("gocacheprog:")]
    assert len(lines) == 1 and "local cache not writable" in lines[0], run.stderr
    assert run.stats["puts"] > 0 and run.stats["misses"] == run.stats["gets"] > 0, run.stats


@contextmanager
def _nothing(path: Path) -> Iterator[Path]:
    yield path
