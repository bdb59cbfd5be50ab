"""The signing keys of one issuer: where they come from, how long they are trusted, when to refetch.

Sources: a ``jwks_file`` (air-gapped clusters, an API server that is not reachable), a
``jwks_uri``, or OIDC discovery (``{issuer}/.well-known/openid-configuration`` names the
``jwks_uri``). Files are read at start, so an unreadable one stops the gate with one line; URLs are
fetched on first use with an async client and a timeout, so a slow or dead issuer never blocks the
event loop nor delays the tokens of another issuer.

A token whose ``kid`` is unknown makes the key set refetch, at most once per
``jwks_refresh_interval_seconds`` (garbage tokens must not turn into a request storm against the
issuer). A set older than ``jwks_max_age_seconds`` is refetched on the next lookup, so a key the
issuer dropped stops being trusted. A failed refetch keeps the keys already known.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
from jwt import PyJWK, PyJWTError

from .settings import IssuerSettings

__all__ = [
    "ALGORITHMS",
    "DiscoveredKeys",
    "FileKeys",
    "KeySet",
    "KeySource",
    "KeysUnavailable",
    "SigningKey",
    "UriKeys",
    "key_source",
]

log = logging.getLogger("gocachegate.auth")

#: Asymmetric algorithms only: never ``none``, never HMAC (a public key is no secret).
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"})
_MAX_KEYS = 100


class KeysUnavailable(Exception):
    """No keys of this issuer could be loaded (yet); its tokens cannot be checked right now."""


class SigningKey:
    """One JWK of the set; a ``PyJWK`` per algorithm, built on first use.

    PyJWT binds a key to one algorithm: the JWK's ``alg`` when it names one (and then a token
    naming another is refused), else the token's own, if it fits the key type.
    """

    def __init__(self, jwk: Mapping[str, Any]) -> None:
        self.jwk = dict(jwk)
        self.alg: str | None = self.jwk.get("alg")
        self._by_alg: dict[str, PyJWK] = {}

    def for_algorithm(self, alg: str) -> PyJWK:
        """The key to verify a token signed with ``alg``; raises ValueError if it does not fit."""
        if self.alg is not None and alg != self.alg:
            raise ValueError(f"token algorithm {alg} does not match its key's {self.alg}")
        key = self._by_alg.get(alg)
        if key is None:
            try:
                key = PyJWK(self.jwk, algorithm=alg)
            except PyJWTError as exc:
                raise ValueError(f"token algorithm {alg} does not fit its key") from exc
            self._by_alg[alg] = key
        return key


def _parse(document: Any, where: str) -> dict[str | None, SigningKey]:
    """The usable signing keys of a JWKS document, by ``kid``; raises ValueError if there are none."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError(f"{where}: not a JWK set (no 'keys' list)")
    keys: dict[str | None, SigningKey] = {}
    for jwk in document["keys"][:_MAX_KEYS]:
        if not isinstance(jwk, Mapping) or jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct":
            continue
        alg = jwk.get("alg")
        if alg is not None and alg not in ALGORITHMS:
            continue  # an HMAC secret or an encryption key has no business here
        try:
            PyJWK(dict(jwk))  # a key PyJWT can load (its own alg, or the default of its type)
        except PyJWTError:
            continue
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) else None] = SigningKey(jwk)
    if not keys:
        raise ValueError(f"{where}: no usable signing keys")
    return keys


def _jwks(keys: Mapping[str | None, SigningKey]) -> dict[str | None, dict[str, Any]]:
    return {kid: key.jwk for kid, key in keys.items()}


class KeySource(Protocol):
    """Where an issuer's JWK set comes from. ``fetch`` raises ValueError or OSError."""

    description: str

    async def fetch(self) -> Any: ...


class FileKeys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"jwks_file {path}"

    def read(self) -> Any:
        try:
            return json.loads(self.path.read_bytes())
        except OSError as exc:
            raise OSError(f"{self.path}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ValueError(f"{self.path}: not JSON") from exc

    async def fetch(self) -> Any:
        return self.read()  # a local file: no network, no reason to leave the loop


async def _get_json(client: httpx.AsyncClient, url: str, timeout: float) -> Any:
    try:
        response = await client.get(url, timeout=timeout, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()
    except httpx.HTTPStatusError as exc:
        raise OSError(f"GET {url}: {exc.response.status_code}") from exc
    except httpx.HTTPError as exc:
        raise OSError(f"GET {url}: {type(exc).__name__} {exc}".rstrip()) from exc
    except ValueError as exc:
        raise ValueError(f"GET {url}: not JSON") from exc


class UriKeys:
    def __init__(self, client: httpx.AsyncClient, uri: str, timeout: float) -> None:
        self._client = client
        self._uri = uri
        self._timeout = timeout
        self.description = f"jwks_uri {uri}"

    async def fetch(self) -> Any:
        return await _get_json(self._client, self._uri, self._timeout)


class DiscoveredKeys:
    """OIDC discovery: the issuer's configuration names its ``jwks_uri`` (asked again after a failure)."""

    def __init__(self, client: httpx.AsyncClient, issuer: str, timeout: float) -> None:
        self._client = client
        self._issuer = issuer
        self._timeout = timeout
        self._jwks_uri: str | None = None
        self.description = f"discovery {issuer.rstrip('/')}/.well-known/openid-configuration"

    async def _discover(self) -> str:
        config = await _get_json(
            self._client, f"{self._issuer.rstrip('/')}/.well-known/openid-configuration", self._timeout
        )
        if not isinstance(config, Mapping) or config.get("issuer") != self._issuer:
            raise ValueError(f"{self.description}: its issuer is not {self._issuer}")
        uri = config.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise ValueError(f"{self.description}: no jwks_uri")
        return uri

    async def fetch(self) -> Any:
        if self._jwks_uri is None:
            self._jwks_uri = await self._discover()
        try:
            return await _get_json(self._client, self._jwks_uri, self._timeout)
        except (OSError, ValueError):
            self._jwks_uri = None
            raise


def key_source(settings: IssuerSettings, client: httpx.AsyncClient) -> KeySource:
    if settings.jwks_file is not None:
        return FileKeys(settings.jwks_file)
    if settings.jwks_uri is not None:
        return UriKeys(client, settings.jwks_uri, settings.jwks_timeout_seconds)
    return DiscoveredKeys(client, settings.issuer, settings.jwks_timeout_seconds)


class KeySet:
    """The keys of one issuer, with the refetch rules of the module docstring."""

    def __init__(self, issuer: str, source: KeySource, refresh_interval: float, max_age: float) -> None:
        self.issuer = issuer
        self.source = source
        self.refresh_interval = refresh_interval
        self.max_age = max_age
        self.generation = 0  # bumped whenever the keys change: decisions taken with older keys expire
        self._keys: dict[str | None, SigningKey] | None = None
        self._loaded_at = 0.0
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()
        if isinstance(source, FileKeys):  # at start: a bad file stops the gate (ValueError, OSError)
            self._tried_at = time.monotonic()
            self._install(_parse(source.read(), str(source.path)), self._tried_at)

    def _install(self, keys: dict[str | None, SigningKey], now: float) -> None:
        if self._keys is None or _jwks(keys) != _jwks(self._keys):
            self.generation += 1
        self._keys, self._loaded_at = keys, now

    def _find(self, kid: str | None) -> SigningKey | None:
        assert self._keys is not None
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _fresh(self, now: float) -> bool:
        return self._keys is not None and now - self._loaded_at < self.max_age

    def fresh(self) -> bool:
        """Loaded less than ``max_age`` ago: decisions taken with these keys still stand."""
        return self._fresh(time.monotonic())

    async def key(self, kid: str | None) -> SigningKey | None:
        """The key with this ``kid`` (refetching as the rules allow), or None if there is none.

        Raises KeysUnavailable when no keys of this issuer were ever loaded.
        """
        if self._fresh(time.monotonic()):
            found = self._find(kid)
            if found is not None:
                return found
        async with self._lock:  # one fetch at a time; the others see its result
            now = time.monotonic()
            known = self._find(kid) if self._keys is not None else None
            if (known is None or not self._fresh(now)) and (
                self._tried_at is None or now - self._tried_at >= self.refresh_interval
            ):
                await self._refetch(now)
                known = self._find(kid) if self._keys is not None else None
        if self._keys is None:
            raise KeysUnavailable(f"no keys for issuer {self.issuer} yet ({self.source.description})")
        return known

    async def _refetch(self, now: float) -> None:
        self._tried_at = now
        try:
            keys = _parse(await self.source.fetch(), self.source.description)
        except (OSError, ValueError) as exc:
            log.warning("keys of issuer %s: %s", self.issuer, exc)
            return
        self._install(keys, time.monotonic())
        log.info("keys of issuer %s: %d from %s", self.issuer, len(keys), self.source.description)
