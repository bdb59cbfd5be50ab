"""Running the real go command through the helper: environments, sample modules, results.

Every test that needs Go goes through here, so all of them use the same toolchain settings
(GOTOOLCHAIN=local, no network, a private GOCACHE per "machine") and read the same stats.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GoRun", "Machine", "go_binary", "helper_binary", "write_module"]


def helper_binary() -> str:
    """The installed console script next to this Python (the venv's gocacheprog)."""
    path = Path(sys.executable).parent / "gocacheprog"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: install the project (scripts/test does)")
    return str(path)


def go_binary() -> str:
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is not on PATH: scripts/test installs it")
    return go


@dataclass
class GoRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    stats: dict[str, int]

    def check(self) -> GoRun:
        assert self.returncode == 0, f"go failed ({self.returncode}):\n{self.stderr[-4000:]}"
        return self


class Machine:
    """One CI machine: its own L1 directory and GOCACHE, a helper pointed at a gate (or none)."""

    def __init__(self, root: Path, url: str | None = None, **env: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.l1 = root / "l1"
        self.stats_file = root / "stats.json"
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(root / "home"),
            "GOCACHE": str(root / "gocache"),
            "GOPATH": str(root / "gopath"),
            "GOMODCACHE": os.environ.get("GOMODCACHE") or str(root / "gomodcache"),
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-buildvcs=false",
            "GOPROXY": "off",
            "GOCACHEPROG": helper_binary(),
            "GOCACHEGATE_DIR": str(self.l1),
            "GOCACHEGATE_STATS_FILE": str(self.stats_file),
            "GOCACHEGATE_FLUSH_TIMEOUT": "30",
        }
        if url is not None:
            self.env["GOCACHEGATE_URL"] = url
        self.env.update(env)

    def go(self, *args: str, cwd: Path, timeout: float = 240, **env: str) -> GoRun:
        self.stats_file.unlink(missing_ok=True)
        start = time.monotonic()
        proc = subprocess.run(
            [go_binary(), *args], cwd=cwd, env={**self.env, **env}, capture_output=True, text=True,
            timeout=timeout,
        )
        seconds = time.monotonic() - start
        stats = json.loads(self.stats_file.read_text()) if self.stats_file.exists() else {}
        return GoRun(proc.returncode, proc.stdout, proc.stderr, seconds, stats)


def write_module(root: Path, packages: int = 3) -> Path:
    """A small module: a main package importing ``packages`` libraries, each with a test."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text("module example.com/sample\n\ngo 1.24\n")
    imports = []
    calls = []
    for i in range(packages):
        pkg = root / f"lib{i}"
        pkg.mkdir(exist_ok=True)
        (pkg / f"lib{i}.go").write_text(
            f'package lib{i}\n\nimport "strings"\n\n'
            f'// Shout{i} is a function for the build to compile.\n'
            f'func Shout{i}(s string) string {{ return strings.ToUpper(s) + "{"!" * (i + 1)}" }}\n'
        )
        (pkg / f"lib{i}_test.go").write_text(
            f'package lib{i}\n\nimport "testing"\n\n'
            f'func TestShout{i}(t *testing.T) {{\n'
            f'\tif got := Shout{i}("a"); got != "A{"!" * (i + 1)}" {{\n\t\tt.Fatal(got)\n\t}}\n}}\n'
        )
        imports.append(f'\t"example.com/sample/lib{i}"')
        calls.append(f'\tfmt.Println(lib{i}.Shout{i}("hello"))')
    (root / "main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n' + "\n".join(imports) + "\n)\n\n"
        "func main() {\n" + "\n".join(calls) + "\n}\n"
    )
    return root
