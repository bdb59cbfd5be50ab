"""The Go side of the bench: workloads, the machines that run them, and the output check.

Machines are ``tests.gohelpers.Machine``: the same environment the end-to-end tests use (its
own GOCACHE, HOME and L1, ``GOTOOLCHAIN=local``, ``GOPROXY=off``, the same ``GOFLAGS``), so a
native machine and a helper machine differ in ``GOCACHEPROG`` and nothing else.

Every timed go command is checked: it must succeed, and what it produced must equal what the
native run of the same step produced (the export data of every std package, the bytes of every
binary, vet's output, each test package's result). The first native run of a step records the
reference (scenarios run native first); any later difference raises ``BenchFailure``.

The real module is hashicorp/hcl (a parser with three commands and seven third-party modules),
fetched once from the Go module proxy into ``.cache/bench/gomodcache``; timed commands never
touch the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.gohelpers import GoRun, Machine, go_binary

from .runner import BenchFailure, Context
from .tools import ROOT

__all__ = ["MODULE", "Step", "Workloads", "gate_machine", "native_machine", "run_step"]

MODULE = "github.com/hashicorp/hcl/v2"
MODULE_VERSION = "v2.24.0"
MODCACHE = ROOT / ".cache" / "bench" / "gomodcache"
_TEST_LINE = re.compile(r"^(ok|FAIL|---)\s+(\S+)", re.M)
_TIMEOUT = 1800.0


@dataclass(frozen=True)
class Step:
    """One go command of a workload, and how to fingerprint what it produced."""

    key: str
    label: str
    args: tuple[str, ...]  # "{out}" stands for the machine's output directory
    cwd: Path
    output: Callable[[Machine, GoRun], str]


def native_machine(root: Path) -> Machine:
    """Go's own cache in ``root``: the reference."""
    return Machine(root, None, GOCACHEPROG="")


def gate_machine(root: Path, url: str | None, namespace: str = "bench", **env: str) -> Machine:
    """The helper with an empty L1 in ``root``, through the gate at ``url`` (None: L1 only)."""
    return Machine(root, url, GOCACHEGATE_NAMESPACE=namespace, **env)


def run_step(ctx: Context, machine: Machine, step: Step) -> GoRun:
    """Run ``step`` on ``machine``; fail unless it succeeded with native's output."""
    out = machine.root / "out"
    out.mkdir(exist_ok=True)
    run = machine.go(*(a.replace("{out}", str(out)) for a in step.args), cwd=step.cwd, timeout=_TIMEOUT)
    if run.returncode != 0:
        tail = " / ".join(run.stderr.strip().splitlines()[-4:])
        raise BenchFailure(f"{step.label} failed with exit {run.returncode}: {tail}")
    digest = step.output(machine, run)
    key = f"output:{step.key}"
    if machine.env["GOCACHEPROG"] != "" and not ctx.has(key):
        raise BenchFailure(f"{step.label}: no native run to compare with (the scenario must run native first)")
    reference = ctx.once(key, lambda: digest)
    if digest != reference:
        raise BenchFailure(f"{step.label} produced other output than native (digest {digest[:12]} != {reference[:12]})")
    return run


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _binaries(machine: Machine, run: GoRun) -> str:
    out = machine.root / "out"
    lines = [f"{p.name} {_sha256(p)}" for p in sorted(out.iterdir())]
    if not lines:
        raise BenchFailure("the build produced no binary")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _plain_output(machine: Machine, run: GoRun) -> str:
    return hashlib.sha256((run.stdout + run.stderr).strip().encode()).hexdigest()


def _test_results(machine: Machine, run: GoRun) -> str:
    """Each test package's verdict, without timings or ``(cached)``."""
    results = sorted(f"{verdict} {pkg}" for verdict, pkg in _TEST_LINE.findall(run.stdout))
    if not results:
        raise BenchFailure("go test reported no package")
    return hashlib.sha256("\n".join(results).encode()).hexdigest()


def cached_tests(run: GoRun) -> tuple[int, int]:
    """(packages whose result came from the cache, packages tested)."""
    lines = [line for line in run.stdout.splitlines() if line.startswith("ok")]
    return sum("(cached)" in line for line in lines), len(lines)


def _exports(packages: str) -> Callable[[Machine, GoRun], str]:
    """The export data of every package the build compiled, as the machine's cache now has it."""

    def digest(machine: Machine, run: GoRun) -> str:
        listed = subprocess.run(
            [go_binary(), "list", "-export", "-f", "{{.ImportPath}} {{.Export}}", *packages.split()],
            cwd=machine.root, env=machine.env, capture_output=True, text=True, timeout=_TIMEOUT,
        )
        if listed.returncode != 0:
            raise BenchFailure(f"go list -export {packages} failed: {listed.stderr.strip()[-300:]}")
        lines = []
        for line in listed.stdout.splitlines():
            pkg, _, export = line.partition(" ")
            lines.append(f"{pkg} {_sha256(Path(export)) if export else '-'}")
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    return digest


def _hello_world(root: Path) -> Path:
    (root / "go.mod").write_text("module example.com/hello\n\ngo 1.24\n")
    (root / "main.go").write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello, world") }\n')
    return root


class Workloads:
    """The steps the scenarios time, prepared on first use."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        os.environ["GOMODCACHE"] = str(MODCACHE)  # Machine passes it on; every machine shares it

    def std(self) -> Step:
        return Step("std", "go build std", ("build", "std"), self._ctx.work, _exports("std"))

    def module_build(self) -> Step:
        return Step("mod-build", "go build ./... (hcl)", ("build", "-o", "{out}/", "./..."), self.module(),
                    _binaries)

    def module_vet(self) -> Step:
        return Step("mod-vet", "go vet ./... (hcl)", ("vet", "./..."), self.module(), _plain_output)

    def module_test(self) -> Step:
        return Step("mod-test", "go test ./... (hcl)", ("test", "./..."), self.module(), _test_results)

    def hello(self) -> Step:
        src = self._ctx.once("hello", lambda: _hello_world(self._ctx.scratch("hello")))
        return Step("hello", "go build (hello world)", ("build", "-o", "{out}/hello", "."), src, _binaries)

    def builds(self) -> list[Step]:
        """Cold builds: std and the module; ``--quick`` keeps the module alone."""
        return [self.module_build()] if self._ctx.quick else [self.std(), self.module_build()]

    def module(self) -> Path:
        return self._ctx.once("module", self._fetch_module)

    def _fetch_module(self) -> Path:
        env = {**os.environ, "GOMODCACHE": str(MODCACHE), "GOFLAGS": "-modcacherw", "GOTOOLCHAIN": "local"}
        env.pop("GOPROXY", None)
        listed = subprocess.run(
            [go_binary(), "mod", "download", "-json", f"{MODULE}@{MODULE_VERSION}"],
            cwd=self._ctx.work, env=env, capture_output=True, text=True, timeout=600,
        )
        if listed.returncode != 0:
            raise BenchFailure(f"go mod download {MODULE}@{MODULE_VERSION}: {listed.stderr.strip()[-300:]}")
        source = Path(json.loads(listed.stdout)["Dir"])
        module = self._ctx.work / "src" / "hcl"
        shutil.copytree(source, module)
        deps = subprocess.run([go_binary(), "mod", "download"], cwd=module, env=env, capture_output=True,
                              text=True, timeout=600)
        if deps.returncode != 0:
            raise BenchFailure(f"go mod download in {MODULE}: {deps.stderr.strip()[-300:]}")
        return module
