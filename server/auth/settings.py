"""The ``auth:`` section of the gate's config: trusted issuers, the rules that map their tokens to
rights, and static tokens (development and break-glass use).

Rules are tried in order and the first match wins; a token no rule matches is refused (default
deny). Static tokens are stored as the SHA-256 of the token, never the token itself.

Everything that can be checked without I/O is checked here, so a bad config is one line at start
(``config: auth.rules[2].namespaces[0]: ...``). Key files are read when the gate starts
(``server.auth.jwks``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AuthSettings",
    "ClaimValue",
    "IssuerSettings",
    "RoleName",
    "RuleSettings",
    "StaticTokenSettings",
    "check_glob",
]

RoleName = Literal["reader", "writer", "admin"]
ClaimValue = str | int | bool

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# What a namespace glob may hold: the characters of a namespace, and fnmatch's * ? [ ] !
_NAMESPACE_GLOB = re.compile(r"[A-Za-z0-9._*?\[\]!-]{1,128}")


def check_glob(pattern: str) -> str:
    """A glob fnmatch reads the way its author meant: a ``[`` opens a set that a ``]`` closes.

    fnmatch takes an unclosed ``[`` literally, so ``team.[ab`` would match nothing anyone intended.
    """
    if not pattern:
        raise ValueError("empty glob")
    i = pattern.find("[")
    while i >= 0:
        j = i + 1
        j += pattern.startswith("!", j)
        j += pattern.startswith("]", j)  # a ] first in the set is a member, as in fnmatch
        close = pattern.find("]", j)
        if close < 0:
            raise ValueError(f"bad glob {pattern[:140]!r}: '[' without a closing ']'")
        i = pattern.find("[", close + 1)
    return pattern


def _check_namespace_glob(pattern: str) -> str:
    if not _NAMESPACE_GLOB.fullmatch(pattern):
        raise ValueError(
            f"bad namespace glob {pattern[:140]!r}: want 1-128 of [A-Za-z0-9._-] and the glob characters *?[]!"
        )
    return check_glob(pattern)


def _check_key_url(url: str, what: str) -> str:
    """Keys decide who gets in: fetch them over TLS, or over plain HTTP only from this machine."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return url
    raise ValueError(f"{what} {url!r} must be an https URL (plain http only on loopback)")


class IssuerSettings(BaseModel):
    """One trusted OIDC issuer; keys from ``jwks_file``, ``jwks_uri``, or discovery when neither."""

    model_config = ConfigDict(extra="forbid")

    issuer: str = Field(min_length=1)  # compared exactly with the tokens' ``iss``
    audiences: list[str] = Field(min_length=1)  # a token's ``aud`` must contain one of them
    jwks_file: Path | None = None
    jwks_uri: str | None = None
    # Clock skew allowed on exp, nbf and iat.
    leeway_seconds: float = Field(default=30, ge=0, le=300)
    # exp - iat may not exceed this: a stolen long-lived token is worth less.
    max_token_lifetime_seconds: int = Field(default=24 * 3600, ge=60)
    # A token with an unknown kid refetches the keys at most this often (garbage must not cause a storm).
    jwks_refresh_interval_seconds: float = Field(default=60, ge=0.1)
    # Keys older than this are refetched on the next new token, so a key the issuer dropped stops working.
    jwks_max_age_seconds: float = Field(default=3600, ge=1)
    jwks_timeout_seconds: float = Field(default=5, gt=0, le=60)

    @field_validator("audiences")
    @classmethod
    def _audiences_not_empty(cls, audiences: list[str]) -> list[str]:
        if any(not a for a in audiences):
            raise ValueError("an audience may not be empty")
        return audiences

    @model_validator(mode="after")
    def _one_key_source(self) -> IssuerSettings:
        if self.jwks_file is not None and self.jwks_uri is not None:
            raise ValueError("give jwks_file or jwks_uri, not both")
        if self.jwks_uri is not None:
            _check_key_url(self.jwks_uri, "jwks_uri")
        elif self.jwks_file is None:
            try:
                _check_key_url(self.issuer, "issuer")
            except ValueError as exc:
                raise ValueError(f"{exc} for discovery, else give jwks_uri or jwks_file") from None
        return self


class RuleSettings(BaseModel):
    """Maps a verified token to rights: by subject (a glob on ``sub``), by claims, or both.

    Each claim must equal the value given, or one of the values of a list. A claim name that is not
    in the token is looked up as a path: ``kubernetes.io.namespace`` reads the ``namespace`` key of
    the ``kubernetes.io`` claim.
    """

    model_config = ConfigDict(extra="forbid")

    subject: str | None = None
    claims: dict[str, ClaimValue | list[ClaimValue]] | None = None
    role: RoleName
    namespaces: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("subject")
    @classmethod
    def _subject_glob(cls, subject: str | None) -> str | None:
        return None if subject is None else check_glob(subject)

    @field_validator("claims")
    @classmethod
    def _claims_not_empty(
        cls, claims: dict[str, ClaimValue | list[ClaimValue]] | None
    ) -> dict[str, ClaimValue | list[ClaimValue]] | None:
        for name, value in (claims or {}).items():
            if not name:
                raise ValueError("a claim name may not be empty")
            if isinstance(value, list) and not value:
                raise ValueError(f"claim {name}: an empty list matches nothing")
        return claims

    @field_validator("namespaces")
    @classmethod
    def _namespace_globs(cls, namespaces: list[str]) -> list[str]:
        return [_check_namespace_glob(p) for p in namespaces]

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

    @field_validator("namespaces")
    @classmethod
    def _namespace_globs(cls, namespaces: list[str]) -> list[str]:
        return [_check_namespace_glob(p) for p in namespaces]


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuers: list[IssuerSettings] = Field(default_factory=list)
    rules: list[RuleSettings] = Field(default_factory=list)
    static_tokens: list[StaticTokenSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_need_issuers(self) -> AuthSettings:
        if self.rules and not self.issuers:
            raise ValueError("rules need at least one entry in issuers")
        seen: set[str] = set()
        for issuer in self.issuers:
            if issuer.issuer in seen:
                raise ValueError(f"issuer {issuer.issuer} is listed twice")
            seen.add(issuer.issuer)
        return self
