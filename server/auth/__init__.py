"""Authentication: turning the Authorization header into a ``Principal``, or refusing.

The gate holds one ``Authenticator``, built from the config in the app's lifespan:

- no ``auth`` section: ``Anonymous`` (every caller is the embedded anonymous admin; the CLI only
  allows this on loopback);
- an ``auth`` section: a ``TokenChain`` of ``TokenVerifier``s tried in order: static tokens
  (``static``), then JWTs of the configured issuers (``oidc``, rights from ``rules``). A verifier
  answers None for a token that is not of its kind, so the next one gets a look; it raises
  ``Unauthorized`` for one of its kind that fails, ``Forbidden`` for a valid one that grants
  nothing. No verifier vouching for a token is a 401 too: default deny.

Only ``server.deps`` hands the header in; tokens are never logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..errors import Unauthorized
from ..identity import ANONYMOUS_ADMIN, Principal
from .oidc import OIDCVerifier
from .rules import Rules
from .settings import AuthSettings
from .static import StaticTokens

__all__ = ["Anonymous", "Authenticator", "TokenChain", "TokenVerifier", "build_authenticator"]


class Authenticator(Protocol):
    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind this Authorization header value; raises Unauthorized."""
        ...

    async def aclose(self) -> None: ...


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal | None:
        """The principal of a token of this kind; None if the token is not of this kind."""
        ...

    async def aclose(self) -> None: ...


class Anonymous:
    """The embedded default: everyone is the anonymous admin, whatever they send."""

    async def authenticate(self, authorization: str | None) -> Principal:
        return ANONYMOUS_ADMIN

    async def aclose(self) -> None:
        return None


class TokenChain:
    """Bearer tokens, offered to each verifier in turn; default deny."""

    def __init__(self, verifiers: Sequence[TokenVerifier]) -> None:
        self.verifiers = tuple(verifiers)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing bearer token")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization must be 'Bearer <token>'", token_given=True)
        for verifier in self.verifiers:
            principal = await verifier.verify(token)
            if principal is not None:
                return principal
        raise Unauthorized("unknown or invalid token", token_given=True)

    async def aclose(self) -> None:
        for verifier in self.verifiers:
            await verifier.aclose()


def build_authenticator(settings: AuthSettings | None) -> Authenticator:
    """The authenticator for these settings; reads key files now (raises OSError, ValueError)."""
    if settings is None:
        return Anonymous()
    verifiers: list[TokenVerifier] = []
    if settings.static_tokens:
        verifiers.append(StaticTokens(settings.static_tokens))
    if settings.issuers:
        verifiers.append(OIDCVerifier(settings.issuers, Rules(settings.rules)))
    return TokenChain(verifiers)
