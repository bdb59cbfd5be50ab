"""Bearer JWTs of the configured OIDC issuers, verified with PyJWT and mapped to rights by the rules.

One ``TokenVerifier`` for all issuers. A token that is not a JWT is not its kind (None: the chain
goes on); a JWT is checked in this order, each failure a 401 with a short reason:

1. its ``iss`` names a configured issuer (looked up unverified, then checked exactly by PyJWT);
2. its ``alg`` is asymmetric (``jwks.ALGORITHMS``: never ``none``, never HMAC) and fits the key;
3. its ``kid`` is in the issuer's key set (an unknown one refetches the set, rate limited; while
   no keys of the issuer could be loaded at all its tokens get 503, not 401);
4. the signature, ``aud`` (one of the issuer's audiences), ``exp``, ``nbf``, ``iat`` (with the
   issuer's leeway), and ``exp - iat`` within the issuer's maximum lifetime;
5. a rule matches (``server.auth.rules``), else 403: the token is fine, it just grants nothing.

Decisions are remembered per token until it expires (bounded, oldest out first), so a job's
thousands of requests pay for one signature check: about 150 µs of CPU for an RS256 or ES256
token against under 1 µs for the lookup. A change in an issuer's keys voids the decisions taken
with the old ones, and so does their age: past ``jwks_max_age_seconds`` the next request checks
the token again (and refetches).

The log gets the issuer, subject, role, namespaces and the decision; never a token or its claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx
import jwt

from ..errors import Forbidden, Unauthorized, Unavailable
from ..identity import Principal
from .jwks import ALGORITHMS, KeySet, KeysUnavailable, key_source
from .rules import Rules
from .settings import IssuerSettings

__all__ = ["OIDCVerifier"]

log = logging.getLogger("gocachegate.auth")

_MAX_DECISIONS = 4096
_REQUIRED = ["exp", "iat", "iss", "aud", "sub"]


@dataclass(frozen=True, slots=True)
class _Issuer:
    settings: IssuerSettings
    keys: KeySet


@dataclass(frozen=True, slots=True)
class _Decision:
    principal: Principal | None  # None: valid, but no rule grants anything
    subject: str
    until: float  # time.time() after which the token is expired
    keys: KeySet
    generation: int


def _refusal(exc: jwt.PyJWTError) -> str:
    """A short reason for a token PyJWT rejected; the details stay out of the answer."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token audience not accepted"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token issuer not trusted"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token signature invalid"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "token algorithm not allowed"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim} claim"
    if isinstance(exc, jwt.InvalidKeyError):
        return "signing key not acceptable"
    return "malformed token"


class OIDCVerifier:
    def __init__(self, issuers: Sequence[IssuerSettings], rules: Rules) -> None:
        self._client = httpx.AsyncClient(follow_redirects=True, trust_env=False)
        self._issuers: dict[str, _Issuer] = {}
        for index, s in enumerate(issuers):
            try:
                keys = KeySet(
                    s.issuer,
                    key_source(s, self._client),
                    refresh_interval=s.jwks_refresh_interval_seconds,
                    max_age=s.jwks_max_age_seconds,
                )
            except (OSError, ValueError) as exc:  # an unusable jwks_file
                raise ValueError(f"auth.issuers[{index}].jwks_file: {exc}") from exc
            self._issuers[s.issuer] = _Issuer(s, keys)
        self._rules = rules
        self._decisions: dict[str, _Decision] = {}

    async def verify(self, token: str) -> Principal | None:
        decision = self._decisions.get(token)
        if decision is not None:
            keys = decision.keys
            if time.time() < decision.until and decision.generation == keys.generation and keys.fresh():
                return self._answer(decision)
            del self._decisions[token]
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None  # not a JWT: not ours to judge
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            self._refuse("token issuer not trusted", f"{iss!r:.120}")
        decision = await self._decide(token, header, issuer)
        if len(self._decisions) >= _MAX_DECISIONS:
            del self._decisions[next(iter(self._decisions))]
        self._decisions[token] = decision
        return self._answer(decision)

    def _answer(self, decision: _Decision) -> Principal:
        if decision.principal is None:
            raise Forbidden(f"no rule grants anything to {decision.subject}")
        return decision.principal

    def _refuse(self, reason: str, issuer: str, subject: str = "-") -> NoReturn:
        log.info("token refused: issuer=%s subject=%s: %s", issuer, subject, reason)
        raise Unauthorized(reason, token_given=True)

    async def _decide(self, token: str, header: dict[str, Any], issuer: _Issuer) -> _Decision:
        settings = issuer.settings
        name = settings.issuer
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            self._refuse(f"token algorithm {alg!r:.20} not allowed", name)
        if kid is not None and not isinstance(kid, str):
            self._refuse("token kid is not a string", name)
        try:
            key = await issuer.keys.key(kid)
        except KeysUnavailable as exc:
            log.warning("token not checked: %s", exc)
            raise Unavailable(f"keys of issuer {name} unavailable, try again later") from exc
        if key is None:
            self._refuse("token signed by an unknown key", name)
        try:
            verifying_key = key.for_algorithm(alg)
        except ValueError as exc:
            self._refuse(str(exc), name)
        try:
            claims = jwt.decode(
                token,
                verifying_key,
                algorithms=[alg],
                audience=settings.audiences,
                issuer=name,
                leeway=settings.leeway_seconds,
                options={"require": _REQUIRED, "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            self._refuse(_refusal(exc), name)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            self._refuse("token subject is not a string", name)
        expires = int(claims["exp"])  # PyJWT checked that both are integers
        if expires - int(claims["iat"]) > settings.max_token_lifetime_seconds:
            self._refuse(f"token lifetime over {settings.max_token_lifetime_seconds}s", name, subject)
        until = expires + settings.leeway_seconds
        generation = issuer.keys.generation  # of the keys just used
        grant = self._rules.match(subject, claims)
        if grant is None:
            log.info("token refused: issuer=%s subject=%s: no rule matches", name, subject)
            return _Decision(None, subject, until, issuer.keys, generation)
        log.info(
            "token accepted: issuer=%s subject=%s role=%s namespaces=%s (auth.rules[%d])",
            name, subject, grant.role.label, ",".join(grant.namespaces), grant.rule,
        )
        principal = Principal(subject=subject, role=grant.role, namespaces=grant.namespaces, source=name)
        return _Decision(principal, subject, until, issuer.keys, generation)

    async def aclose(self) -> None:
        await self._client.aclose()
