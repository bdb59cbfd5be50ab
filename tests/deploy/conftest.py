"""Rendered once per session: every kustomization under deploy/ and prow-jobs/, and the Prow setup."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, PROW_CONFIG, PROW_JOBS, find, kustomize_build

#: Every overlay a user may deploy: a new directory under overlays/ is validated without a test edit.
OVERLAYS = sorted(p.name for p in (DEPLOY / "kustomize" / "overlays").iterdir() if p.is_dir())


@dataclass(frozen=True)
class Rendered:
    name: str
    path: Path  # the rendered stream, as kubectl apply -k would send it
    docs: list[dict[str, Any]]

    def gate_config(self) -> dict[str, Any]:
        data = find(self.docs, "ConfigMap", "gocachegate-config")["data"]["config.yaml"]
        config: dict[str, Any] = yaml.safe_load(data)
        return config


def _render(directory: Path, name: str, out: Path) -> Rendered:
    text, docs = kustomize_build(directory)
    path = out / f"{name}.yaml"
    path.write_text(text)
    return Rendered(name, path, docs)


@pytest.fixture(scope="session")
def overlays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    out = tmp_path_factory.mktemp("rendered")
    return {name: _render(DEPLOY / "kustomize" / "overlays" / name, name, out) for name in OVERLAYS}


@pytest.fixture(scope="session")
def test_pods(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return _render(PROW_JOBS / "test-pods", "test-pods", tmp_path_factory.mktemp("rendered"))


@pytest.fixture(scope="session")
def prow_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROW_CONFIG.read_text())
    return config
