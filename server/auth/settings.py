"""The ``auth:`` section of the gate's config: trusted issuers, the rules that map their tokens to
rights, and static tokens (development and break-glass use).

Rules are tried in order and the first match wins; a token no rule matches is refused (default
deny). Static tokens are stored as the SHA-256 of the token, never the token itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AuthSettings", "IssuerSettings", "RoleName", "RuleSettings", "StaticTokenSettings"]

RoleName = Literal["reader", "writer", "admin"]


class IssuerSettings(BaseModel):
    """One trusted OIDC issuer; keys from ``jwks_file``, ``jwks_uri``, or discovery when neither."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    jwks_file: Path | None = None
    jwks_uri: str | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerSettings:
        if self.jwks_file is not None and self.jwks_uri is not None:
            raise ValueError("give jwks_file or jwks_uri, not both")
        return self


class RuleSettings(BaseModel):
    """Maps a verified token to rights: by subject (a glob), by claims (all must equal), or both."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = None
    claims: dict[str, str | int | bool] | None = None
    role: RoleName
    namespaces: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @model_validator(mode="after")
    def _matches_something(self) -> RuleSettings:
        if self.subject is None and not self.claims:
            raise ValueError("a rule needs subject or claims")
        return self


class StaticTokenSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # hex SHA-256 of the token
    name: str = Field(min_length=1)  # the subject the token acts as
    role: RoleName
    namespaces: list[str] = Field(default_factory=lambda: ["*"], min_length=1)


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuers: list[IssuerSettings] = Field(default_factory=list)
    rules: list[RuleSettings] = Field(default_factory=list)
    static_tokens: list[StaticTokenSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_need_issuers(self) -> AuthSettings:
        if self.rules and not self.issuers:
            raise ValueError("rules need at least one entry in issuers")
        return self
