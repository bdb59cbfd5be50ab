"""deploy/**/Dockerfile: linted by hadolint (there is no Docker engine here to build them), and every
file they copy from the build context exists, so a rename in the repository cannot break the image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.tools import DEPLOY, ROOT, run, tool

DOCKERFILES = sorted(DEPLOY.rglob("Dockerfile*"))


def test_there_are_the_gate_and_the_bundle_images() -> None:
    assert {p.relative_to(DEPLOY).as_posix() for p in DOCKERFILES} >= {"Dockerfile", "bundle/Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    out = run(tool("hadolint"), "--no-color", dockerfile)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_copied_files_exist_in_the_build_context(dockerfile: Path) -> None:
    """The build context is the repository root (both files say so in their first lines)."""
    sources = [
        source
        for line in dockerfile.read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"{dockerfile.name} copies what the repository does not have: {missing}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_final_stage_runs_as_non_root(dockerfile: Path) -> None:
    stages = re.split(r"^FROM ", dockerfile.read_text(), flags=re.M)
    users = re.findall(r"^USER (\S+)", stages[-1], flags=re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
