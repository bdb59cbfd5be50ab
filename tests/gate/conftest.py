"""The gate in process (the real app and lifespan, driven through httpx's ASGI transport), and
helpers to make entries. Tests that need sockets, signals or the CLI use ``tests/gatefixture.py``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from server.app import create_app, lifespan
from server.config import Settings, parse_settings
from server.deps import Gate
from tests.gatefixture import merge_config

__all__ = ["InProcess", "entry_headers", "new_action", "token_config"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_action() -> str:
    return os.urandom(32).hex()


def entry_headers(body: bytes, **extra: str) -> dict[str, str]:
    return {"X-Go-Output-Id": hashlib.sha256(body).hexdigest(), "X-Go-Size": str(len(body)), **extra}


def token_config(*tokens: tuple[str, str, str, list[str]]) -> dict[str, Any]:
    """An ``auth`` section with static tokens given as (token, name, role, namespaces)."""
    return {
        "auth": {
            "static_tokens": [
                {"sha256": hashlib.sha256(t.encode()).hexdigest(), "name": n, "role": r, "namespaces": ns}
                for t, n, r, ns in tokens
            ]
        }
    }


@dataclass
class InProcess:
    app: FastAPI
    client: httpx.AsyncClient
    storage_path: Path

    @property
    def gate(self) -> Gate:
        gate: Gate = self.app.state.gate
        return gate

    def ops(self) -> dict[tuple[str, str], int]:
        return self.gate.storage.snapshot()

    def files(self) -> list[Path]:
        return sorted(p for p in self.storage_path.rglob("*") if p.is_file())


def settings_for(tmp_path: Path, config: Mapping[str, Any] | None = None) -> Settings:
    base = {"storage": {"backend": "local", "path": str(tmp_path / "storage"), "fsync": False}}
    return parse_settings(merge_config(base, config or {}))


@asynccontextmanager
async def in_process(tmp_path: Path, config: Mapping[str, Any] | None = None) -> AsyncIterator[InProcess]:
    settings = settings_for(tmp_path, config)
    app = create_app(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gate") as client:
            yield InProcess(app, client, settings.storage.path)


@pytest.fixture
async def gate_app(tmp_path: Path) -> AsyncIterator[InProcess]:
    """The gate with default settings (no auth) on local storage under tmp_path."""
    async with in_process(tmp_path) as gate:
        yield gate
