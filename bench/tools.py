"""The programs the bench compares against or drives, installed on first use and found after.

nginx and wrk come from Debian (``apt-get``; services are not started by the install, the bench
runs nginx itself on loopback), fake-gcs-server through the repository's own installer, the peer
helper with ``go install`` from the Go module proxy into ``.tools/bin``, and the latency proxy
(``bench/latencyproxy``, standard library only) with ``go build``. Every installer is
idempotent: a second run finds the tool and does nothing. A tool that cannot be had raises
``BenchFailure`` with the installer's own words, so the scenarios that need it say why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .runner import BenchFailure

__all__ = ["PEER_MODULE", "ROOT", "TOOLS_BIN", "Tools"]

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"
#: The Go helper a team would otherwise pick: a GOCACHEPROG process over gocloud.dev buckets.
PEER_MODULE = "github.com/saracen/gobuildcache"
PEER_VERSION = "latest"
_APT_PACKAGES = {"nginx": "nginx", "wrk": "wrk"}
_SBIN = (Path("/usr/sbin"), Path("/usr/bin"))
_GO_ENV = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}


def _run(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    if proc.returncode != 0:
        words = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BenchFailure(f"{' '.join(argv[:3])} failed: {' / '.join(words)}")
    return proc.stdout


@contextmanager
def _no_service_start() -> Iterator[None]:
    """Keep Debian's maintainer scripts from starting nginx on port 80 (the bench runs its own)."""
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# bench/tools.py: no service starts during the install\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink()


class Tools:
    """Paths of the installed tools, installing each one the first time it is asked for."""

    def __init__(self) -> None:
        self._apt_updated = False
        self._found: dict[str, Path] = {}

    def _apt(self, name: str) -> Path:
        found = shutil.which(name) or next((str(d / name) for d in _SBIN if (d / name).exists()), None)
        if found is None:
            if not shutil.which("apt-get"):
                raise BenchFailure(f"{name} is missing and there is no apt-get to install it")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            if not self._apt_updated:
                _run(["apt-get", "update", "-qq"], env=env)
                self._apt_updated = True
            with _no_service_start():
                _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", _APT_PACKAGES[name]], env=env)
            found = shutil.which(name) or next((str(d / name) for d in _SBIN if (d / name).exists()), None)
            if found is None:
                raise BenchFailure(f"apt-get installed {_APT_PACKAGES[name]} but {name} is not on PATH")
        return Path(found)

    def get(self, name: str) -> Path:
        """The path of ``nginx``, ``wrk``, ``fake-gcs-server``, ``gobuildcache`` or ``latencyproxy``."""
        if name not in self._found:
            if name in _APT_PACKAGES:
                self._found[name] = self._apt(name)
            elif name == "fake-gcs-server":
                _run(["bash", str(ROOT / "scripts" / "tools" / "fake-gcs-server.sh")])
                self._found[name] = TOOLS_BIN / name
            elif name == "gobuildcache":
                self._found[name] = self._go_install(PEER_MODULE, PEER_VERSION, name)
            elif name == "latencyproxy":
                self._found[name] = TOOLS_BIN / name
                _run(["go", "build", "-o", str(TOOLS_BIN / name), "."], env=_GO_ENV, cwd=ROOT / "bench" / name)
            else:
                raise KeyError(name)
        return self._found[name]

    def _go_install(self, module: str, version: str, name: str) -> Path:
        binary = TOOLS_BIN / name
        if binary.exists():
            return binary
        TOOLS_BIN.mkdir(parents=True, exist_ok=True)
        _run(["go", "install", f"{module}@{version}"], env={**_GO_ENV, "GOBIN": str(TOOLS_BIN)}, cwd=Path("/"))
        return binary

    def versions(self) -> dict[str, str]:
        """Versions of what this run used, for the results' header."""
        out: dict[str, str] = {"go": _run(["go", "env", "GOVERSION"]).strip()}
        for name, path in self._found.items():
            out[name] = _version_of(name, path)
        return out


def _version_of(name: str, path: Path) -> str:
    if name == "nginx":
        proc = subprocess.run([str(path), "-v"], capture_output=True, text=True)
        return (proc.stderr or proc.stdout).strip().removeprefix("nginx version: ")
    if name == "wrk":
        proc = subprocess.run([str(path), "-v"], capture_output=True, text=True)
        match = re.search(r"wrk (\S+)", proc.stdout + proc.stderr)
        return match.group(1) if match else "unknown"
    proc = subprocess.run(["go", "version", "-m", str(path)], capture_output=True, text=True)
    match = re.search(r"^\s*mod\s+\S+\s+(\S+)", proc.stdout, re.M)
    return match.group(1) if match else "unknown"
