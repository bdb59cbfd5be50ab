"""The gate's configuration: one YAML file, one validated model, one-line errors.

Every section is a pydantic model that forbids unknown keys, so a typo fails at start instead of
silently falling back to a default. A new section is one line in ``Settings``. Errors become a
``ConfigError`` whose message names the key path, e.g. ``config: storage.backnd: unknown key``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .auth.settings import AuthSettings
from .cost.prices import PriceSettings
from .storage.hot import HotTierSettings
from .storage.settings import StorageSettings
from .usage.settings import UsageSettings

__all__ = [
    "CONFIG_ENV",
    "CompressionSettings",
    "ConfigError",
    "LimitsSettings",
    "ServerSettings",
    "Settings",
    "load_settings",
    "parse_settings",
]

CONFIG_ENV = "GOCACHEGATE_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line, ready for stderr."""


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8086, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = False
    # After SIGTERM, /readyz answers 503 for this long while requests are still served, so a load
    # balancer stops sending new ones before the listener closes (Kubernetes: a few seconds).
    drain_seconds: float = Field(default=0.0, ge=0, le=300)
    # Then in-flight requests get this long to finish.
    graceful_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # A request (headers and body) may pause this long at most; a client that goes quiet is cut off.
    client_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)


class LimitsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_entry_bytes: int = Field(default=512 << 20, ge=1)  # decoded size of one entry


class CompressionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_bytes: int = Field(default=512, ge=0)  # plain bodies up to this size are stored as they are
    level: int = Field(default=1, ge=1, le=19)  # zstd level; above 19 needs windows the gate refuses


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    auth: AuthSettings | None = None  # None: the embedded default, every caller is an anonymous admin
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    compression: CompressionSettings = Field(default_factory=CompressionSettings)
    hot_tier: HotTierSettings = Field(default_factory=HotTierSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    prices: PriceSettings = Field(default_factory=PriceSettings)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from ``path``, else from the file ``$GOCACHEGATE_CONFIG`` names, else the defaults."""
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return Settings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config: {path}: not UTF-8 text") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"config: {path}:{where} {problem}") from exc
    return parse_settings(data)


def parse_settings(data: Any) -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping of sections")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from exc


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required"
    else:
        message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"config: {path or 'top level'}: {message}{more}"
