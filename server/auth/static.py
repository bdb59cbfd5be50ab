"""Static bearer tokens from the config, stored as their SHA-256: development and break-glass use.

Every configured digest is compared with ``hmac.compare_digest``, all of them on every call, so
the time taken says nothing about which digest came close.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from ..identity import Principal, Role
from .settings import StaticTokenSettings

__all__ = ["StaticTokens", "token_digest"]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class StaticTokens:
    source = "static"

    def __init__(self, tokens: Sequence[StaticTokenSettings]) -> None:
        self._entries = [
            (
                t.sha256.encode(),
                Principal(
                    subject=t.name,
                    role=Role.parse(t.role),
                    namespaces=tuple(t.namespaces),
                    source=self.source,
                ),
            )
            for t in tokens
        ]

    async def verify(self, token: str) -> Principal | None:
        digest = token_digest(token).encode()
        found: Principal | None = None
        for expected, principal in self._entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = principal
        return found

    async def aclose(self) -> None:
        return None
