"""The gate fails while go builds: killed and restarted mid-build, or a listener that never
answers. The build must succeed with the same binary as without any cache, in bounded time.

(The gate killed for good mid-build is tests/e2e/test_cache_path.py.)
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.gatefixture import free_port, gate_command, write_config
from tests.gohelpers import Machine
from tests.reliability.support import Reference, digest, stalled_listener

pytestmark = pytest.mark.go


@contextmanager
def gate_on(directory: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A gate process on a given port (so that a restarted one is found at the same URL)."""
    config = write_config(directory)
    with open(directory / f"gate-{time.monotonic_ns()}.log", "wb") as log:
        proc = subprocess.Popen(gate_command("serve", "--config", str(config), "--port", str(port)),
                                stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gate exited"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the gate did not come up")


def test_gate_killed_and_restarted_during_one_build(reference: Reference, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    directory = tmp_path / "gate"
    machine = Machine(tmp_path / "m", url, GOCACHEGATE_NAMESPACE="restarted")
    with gate_on(directory, port) as first:
        wait_healthy(url, first)
        restarted: list[subprocess.Popen[bytes]] = []
        with ExitStack() as stack:

            def kill_then_restart() -> None:
                first.send_signal(signal.SIGKILL)
                first.wait()
                time.sleep(0.5)
                restarted.append(stack.enter_context(gate_on(directory, port)))

            timer = threading.Timer(1.0, kill_then_restart)
            timer.start()
            run = machine.go("build", "-o", str(tmp_path / "app"), ".", cwd=reference.module)
            timer.join()
            run.check()
            assert first.returncode == -signal.SIGKILL
            assert restarted and restarted[0].poll() is None
            wait_healthy(url, restarted[0])
            s = run.stats
            assert s["gets"] == s["hits"] + s["misses"] and s["corrupt"] == 0, s
            assert digest(tmp_path / "app") == reference.binary_sha

            # What the killed gate had stored is whole: a fresh machine is served it, nothing corrupt.
            fresh = Machine(tmp_path / "fresh", url, GOCACHEGATE_NAMESPACE="restarted")
            again = fresh.go("build", "-o", str(tmp_path / "again"), ".", cwd=reference.module).check()
            assert again.stats["corrupt"] == 0 and again.stats["remote_errors"] == 0, again.stats
            assert digest(tmp_path / "again") == reference.binary_sha


def test_stalled_gate_costs_a_bounded_delay(reference: Reference, tmp_path: Path) -> None:
    """A gate that accepts connections and never answers: every call waits GOCACHEGATE_TIMEOUT at
    most, the circuit opens, and the build goes on on the local cache."""
    with stalled_listener() as url:
        machine = Machine(tmp_path / "m", url, GOCACHEGATE_NAMESPACE="stalled", GOCACHEGATE_FLUSH_TIMEOUT="10")
        run = machine.go("build", "-o", str(tmp_path / "app"), ".", cwd=reference.module)
    run.check()
    assert digest(tmp_path / "app") == reference.binary_sha
    assert run.stderr.count("gate unavailable") == 1, run.stderr
    s = run.stats
    assert s["hits"] == 0 and s["uploads"] == 0 and s["misses"] == s["gets"], s
    extra = run.seconds - reference.helper_seconds
    print(f"\nstalled gate: {run.seconds:.1f} s against {reference.helper_seconds:.1f} s without a gate "
          f"(+{extra:.1f} s; native go {reference.native_seconds:.1f} s); remote wait {s['remote_wait_ms']} ms")
    timeout = 5.0  # GOCACHEGATE_TIMEOUT's default
    assert s["remote_wait_ms"] <= 3 * timeout * 1000, s
    assert extra < 4 * timeout, f"a stalled gate cost {extra:.1f} s"
