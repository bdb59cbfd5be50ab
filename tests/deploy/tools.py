"""The real validators behind tests/deploy, installed by ``scripts/tools/*.sh`` into ``.tools/bin``.

A missing tool skips the test on a developer's machine and fails it under ``CI``: there, a
validator that silently did not run would turn every check of deploy/ and prow-jobs/ green.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__ = [
    "DEPLOY",
    "PROW_CONFIG",
    "PROW_JOBS",
    "ROOT",
    "find",
    "kubernetes_validate",
    "kustomize_build",
    "run",
    "tool",
]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROW_JOBS = ROOT / "prow-jobs"
#: Stands in for the Prow deployment's own config.yaml (pod namespace, decoration defaults).
PROW_CONFIG = Path(__file__).resolve().parent / "prow-config.yaml"

Manifest = dict[str, Any]


def tool(name: str) -> Path:
    """``.tools/bin/NAME`` (or NAME on PATH); skip without it, fail under CI."""
    found = ROOT / ".tools" / "bin" / name
    if not found.exists() and (on_path := shutil.which(name)):
        found = Path(on_path)
    if found.exists():
        return found
    reason = f"{name} is not installed: run scripts/tools/{name}.sh"
    if os.environ.get("CI"):
        pytest.fail(f"CI needs {name}: {reason}", pytrace=False)
    pytest.skip(reason)


def run(*cmd: str | Path, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )


def kustomize_build(directory: Path) -> tuple[str, list[Manifest]]:
    """The rendered YAML stream of a kustomization, and its documents."""
    out = run(tool("kustomize"), "build", directory)
    assert out.returncode == 0, f"kustomize build {directory} failed:\n{out.stderr}"
    docs = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    assert docs, f"kustomize build {directory} rendered nothing"
    return out.stdout, docs


def kubernetes_validate(path: Path, version: str, expected: int) -> None:
    """Every one of ``expected`` documents in ``path`` passes the strict schema of ``version``.

    kubernetes-validate only warns (exit 0) when it has no schema for a kind, so a warning counts
    as a failure here: a kind the target Kubernetes does not know is an error for us.
    """
    out = run(tool("kubernetes-validate"), "--strict", "-k", version, path)
    lines = out.stdout.splitlines() + out.stderr.splitlines()
    problems = [line for line in lines if line.startswith(("WARN", "ERROR"))]
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    assert out.returncode == 0 and not problems, "\n".join(problems or lines)
    assert len(passed) == expected, "\n".join(lines)


def find(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one document of ``kind`` (and ``name``); names may carry kustomize's hash suffix."""
    def named(doc: Manifest) -> bool:
        actual: str = doc["metadata"]["name"]
        return name is None or actual == name or actual.startswith(f"{name}-")

    hits = [doc for doc in docs if doc["kind"] == kind and named(doc)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]
