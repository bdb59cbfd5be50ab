"""Measures what the bundled helper costs each go command, next to the venv's helper.

    .venv/bin/python deploy/bundle/measure.py --bundle dist/gocacheprog/gocacheprog [--runs 15]

go starts the helper once per command and waits for its handshake, so the two figures that count
are the time from exec to the handshake and a warm ``go build`` of a small program (every action a
local hit). Both helpers run on the local cache alone (no GOCACHEGATE_URL), so only their own
start-up differs; the native GOCACHE build is the reference. Prints medians and minima in ms of
wall time, and of CPU time (user + system of the helper, or of go and its helper): on a machine
shared with other work, CPU time is the steadier of the two.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sample", "go_build_ms", "handshake_ms", "main"]

CLOSE = b'{"ID":1,"Command":"close"}\n'
PROGRAM = 'package main\n\nimport (\n\t"fmt"\n\t"net/http"\n)\n\nfunc main() { fmt.Println(http.StatusOK) }\n'


@dataclass(frozen=True)
class Sample:
    wall_ms: float
    cpu_ms: float  # of the child processes this sample ran and reaped


def _children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def handshake_ms(helper: str, env: Mapping[str, str]) -> Sample:
    """Time from exec to the handshake line (and the helper's whole CPU time); closes it as go does."""
    cpu = _children_cpu_ms()
    start = time.perf_counter()
    proc = subprocess.Popen([helper], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(env))
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    elapsed = (time.perf_counter() - start) * 1000
    proc.stdin.write(CLOSE)
    proc.stdin.close()
    proc.stdout.read()
    proc.wait(timeout=30)
    if not line.startswith(b'{"ID":0,'):
        raise RuntimeError(f"{helper}: no handshake, got {line[:80]!r}")
    return Sample(elapsed, _children_cpu_ms() - cpu)


def go_build_ms(module: Path, env: Mapping[str, str]) -> Sample:
    cpu = _children_cpu_ms()
    start = time.perf_counter()
    subprocess.run(["go", "build", "-o", os.devnull, "."], cwd=module, env=dict(env), check=True)
    return Sample((time.perf_counter() - start) * 1000, _children_cpu_ms() - cpu)


def _env(work: Path, name: str, helper: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOCACHEGATE_", "GOCACHEPROG"))}
    env["GOCACHE"] = str(work / name / "gocache")
    env["GOCACHEGATE_DIR"] = str(work / name / "l1")
    env["GOFLAGS"] = "-buildvcs=false"
    if helper is not None:
        env["GOCACHEPROG"] = helper
    return env


def _summary(samples: list[Sample]) -> str:
    wall = [s.wall_ms for s in samples]
    cpu = [s.cpu_ms for s in samples]
    return (f"wall median {statistics.median(wall):7.1f} min {min(wall):7.1f}   "
            f"cpu median {statistics.median(cpu):7.1f} min {min(cpu):7.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bundle", required=True, help="the bundle's gocacheprog executable")
    parser.add_argument("--venv-helper", default=shutil.which("gocacheprog") or "gocacheprog")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    helpers = {"bundle": str(Path(args.bundle).resolve()), "venv": str(Path(args.venv_helper).resolve())}

    with tempfile.TemporaryDirectory(prefix="gocacheprog-measure-") as tmp:
        work = Path(tmp)
        module = work / "hello"
        module.mkdir()
        (module / "go.mod").write_text("module example.com/hello\n\ngo 1.24\n")
        (module / "main.go").write_text(PROGRAM)
        envs = {name: _env(work, name, helper) for name, helper in helpers.items()}
        envs["native GOCACHE"] = _env(work, "native", None)

        hand: dict[str, list[Sample]] = {name: [] for name in helpers}
        build: dict[str, list[Sample]] = {name: [] for name in envs}
        for env in envs.values():
            go_build_ms(module, env)  # fill the caches: every run below is warm
        for _ in range(args.runs):  # interleaved, so load on the machine hits every variant alike
            for name, helper in helpers.items():
                hand[name].append(handshake_ms(helper, envs[name]))
            for name, env in envs.items():
                build[name].append(go_build_ms(module, env))

    print(f"runs: {args.runs} each, times in ms")
    for name, samples in hand.items():
        print(f"handshake          {name:15s} {_summary(samples)}")
    for name, samples in build.items():
        print(f"warm go build      {name:15s} {_summary(samples)}")
    for kind in ("wall_ms", "cpu_ms"):
        bundle = statistics.median(getattr(s, kind) for s in build["bundle"])
        venv = statistics.median(getattr(s, kind) for s in build["venv"])
        print(f"bundle - venv, warm go build, median {kind[:-3]} time: {bundle - venv:+.1f} ms per go command")
    return 0


if __name__ == "__main__":
    sys.exit(main())
