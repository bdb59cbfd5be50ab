"""A real ``gocachegate serve`` process on a free loopback port, for any test that needs a gate.

    with start_gate(tmp_path / "gate", {"limits": {"max_entry_bytes": 1024}}) as gate:
        httpx.get(f"{gate.url}/healthz")

The config is YAML written into the gate's directory: local storage under ``storage/`` with fsync
off (tests do not need durability), deep-merged with what the test passes; or a ready file given
as ``config_file``. The process's output goes to ``gate.log`` in that directory and is shown when
the gate fails to come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["GateProcess", "free_port", "gate_command", "merge_config", "start_gate", "write_config"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gate_command(*args: str) -> list[str]:
    """The CLI run with this Python (no reliance on PATH)."""
    return [sys.executable, "-m", "server.cli", *args]


def merge_config(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def write_config(directory: Path, config: Mapping[str, Any] | None = None) -> Path:
    """The config file a test gate runs with: local storage in ``directory`` merged with ``config``."""
    directory.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {"storage": {"backend": "local", "path": str(directory / "storage"), "fsync": False}}
    path = directory / "gate.yaml"
    path.write_text(yaml.safe_dump(merge_config(base, config or {})))
    return path


@dataclass
class GateProcess:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    directory: Path
    config_path: Path

    @property
    def storage_path(self) -> Path:
        return self.directory / "storage"

    def entries(self, namespace: str) -> int:
        """How many entries the local storage holds for ``namespace`` (counted on disk)."""
        root = self.storage_path / "ac" / namespace
        return sum(1 for p in root.glob("*/*") if p.is_file() and not p.name.startswith(".")) if root.is_dir() else 0

    def log(self) -> str:
        return (self.directory / "gate.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the gate and wait for it; kill it if it does not end in time. Its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _wait_healthy(gate: GateProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gate.proc.poll() is not None:
            raise RuntimeError(f"gocachegate exited with {gate.proc.returncode}:\n{gate.log()}")
        try:
            with urllib.request.urlopen(f"{gate.url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    gate.stop(signal.SIGKILL)
    raise RuntimeError(f"gocachegate did not answer /healthz within {timeout}s:\n{gate.log()}")


@contextmanager
def start_gate(
    directory: Path,
    config: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Iterator[GateProcess]:
    """Start a gate, wait until /healthz answers, yield it, and stop it (SIGTERM, then SIGKILL)."""
    if config_file is not None:
        if config is not None:
            raise ValueError("give config or config_file, not both")
        directory.mkdir(parents=True, exist_ok=True)
        config_path = config_file
    else:
        config_path = write_config(directory, config)
    gate: GateProcess | None = None
    for attempt in range(3):  # a free port can be taken between probing and binding
        port = free_port()
        with open(directory / "gate.log", "wb") as log:
            proc = subprocess.Popen(
                gate_command("serve", "--config", str(config_path), "--port", str(port)),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=directory,
            )
        gate = GateProcess(proc, f"http://127.0.0.1:{port}", port, directory, config_path)
        try:
            _wait_healthy(gate, timeout)
            break
        except RuntimeError:
            if attempt == 2 or "cannot listen" not in gate.log():
                raise
    assert gate is not None
    try:
        yield gate
    finally:
        gate.stop()
