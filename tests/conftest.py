"""Fixtures shared by every test package: real gate processes (see ``tests/gatefixture.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.gatefixture import GateProcess, start_gate

StartGate = Callable[..., GateProcess]


@pytest.fixture
def gate_factory(tmp_path: Path) -> Iterator[StartGate]:
    """Start gates with ``gate_factory(config=None, env=None)``; all are stopped after the test."""
    with ExitStack() as stack:
        count = 0

        def start(config: Mapping[str, Any] | None = None, **kwargs: Any) -> GateProcess:
            nonlocal count
            count += 1
            return stack.enter_context(start_gate(tmp_path / f"gate{count}", config, **kwargs))

        yield start


@pytest.fixture
def gate(gate_factory: StartGate) -> GateProcess:
    """A gate with the defaults: local storage, no auth (anonymous admin on loopback)."""
    return gate_factory()
