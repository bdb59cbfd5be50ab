"""From a verified token's claims to rights: ordered rules, the first match wins, default deny.

A rule matches when its ``subject`` glob matches ``sub`` (fnmatch, case-sensitive) and every one of
its ``claims`` holds. A claim holds when the token's value equals the rule's value (or one of the
rule's list), type included: ``true`` is not ``"true"`` and ``1`` is not ``true``. A list-valued
claim in the token (``groups``, say) holds when any of its members is allowed.

One extra check protects rules on ``email`` (Google ID tokens): they match only tokens whose
``email_verified`` is true, because an unverified address proves nothing about its owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..identity import Role, compile_glob
from .settings import ClaimValue, RuleSettings

__all__ = ["Grant", "Rules"]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Grant:
    """What the first matching rule gives; ``rule`` is its position in the config (for logs)."""

    role: Role
    namespaces: tuple[str, ...]
    rule: int


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``; if the token has no such claim, ``a.b.c`` walks nested objects.

    Claim names may hold dots themselves (``kubernetes.io``), so the walk tries each split:
    ``kubernetes.io.pod.name`` finds ``claims["kubernetes.io"]["pod"]["name"]``.
    Returns ``_MISSING`` when nothing is there.
    """
    if name in claims:
        return claims[name]
    dot = name.find(".")
    while dot > 0:
        inner = claims.get(name[:dot])
        if isinstance(inner, Mapping):
            found = _claim(inner, name[dot + 1 :])
            if found is not _MISSING:
                return found
        dot = name.find(".", dot + 1)
    return _MISSING


def _same(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


def _holds(actual: Any, allowed: ClaimValue | list[ClaimValue]) -> bool:
    choices = allowed if isinstance(allowed, list) else [allowed]
    values = actual if isinstance(actual, list) else [actual]
    return any(_same(value, choice) for value in values for choice in choices)


@dataclass(frozen=True, slots=True)
class _Rule:
    subject: str | None
    claims: tuple[tuple[str, ClaimValue | list[ClaimValue]], ...]
    grant: Grant

    def matches(self, subject: str, claims: Mapping[str, Any]) -> bool:
        if self.subject is not None and not compile_glob(self.subject).match(subject):
            return False
        for name, allowed in self.claims:
            if not _holds(_claim(claims, name), allowed):
                return False
            if name == "email" and claims.get("email_verified") is not True:
                return False
        return True


class Rules:
    def __init__(self, rules: Sequence[RuleSettings]) -> None:
        self._rules = tuple(
            _Rule(
                subject=r.subject,
                claims=tuple((r.claims or {}).items()),
                grant=Grant(Role.parse(r.role), tuple(r.namespaces), index),
            )
            for index, r in enumerate(rules)
        )

    def match(self, subject: str, claims: Mapping[str, Any]) -> Grant | None:
        """The grant of the first rule matching this token, or None (refuse)."""
        for rule in self._rules:
            if rule.matches(subject, claims):
                return rule.grant
        return None
