"""Who is calling, and what that identity may do: the one answer every route acts on.

Authenticators (``server.auth``) turn a bearer token into a ``Principal``; the dependencies in
``server.deps`` check it. Nothing else decides rights.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from fnmatch import translate

__all__ = ["ANONYMOUS_ADMIN", "Principal", "Role", "compile_glob"]


class Role(enum.IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    READER = 1
    WRITER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Role:
        return cls[label.upper()]


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: Role
    namespaces: tuple[str, ...]  # globs (fnmatch, case-sensitive): "*", "gardener.*"
    source: str  # which authenticator vouched for it: "embedded", "static", an issuer URL

    def grants(self, namespace: str) -> bool:
        return any(pattern == "*" or compile_glob(pattern).match(namespace) for pattern in self.namespaces)

    def can_read(self, namespace: str) -> bool:
        return self.grants(namespace)

    def can_write(self, namespace: str) -> bool:
        return self.role >= Role.WRITER and self.grants(namespace)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """fnmatch's case-sensitive glob (namespaces, subjects), compiled once: this runs on every request."""
    return re.compile(translate(pattern))


#: Every caller when the config has no ``auth`` section (the embedded default on loopback).
ANONYMOUS_ADMIN = Principal(subject="anonymous", role=Role.ADMIN, namespaces=("*",), source="embedded")
