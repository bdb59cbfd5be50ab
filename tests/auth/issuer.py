"""Test issuers with real keys: they sign tokens shaped like those of Kubernetes, Google and GitHub
Actions, and publish their keys as a JWK set, in a file or over HTTP (with OIDC discovery).

    k8s = Issuer("https://prow.example/issuer")
    token = k8s.sign(k8s_claims(k8s.name, "presubmit-cache"))
    with KeyServer() as keys:
        keys.publish("k8s", k8s)          # GET {keys.url}/k8s/jwks, counted in keys.fetches["k8s"]

Every token is signed by PyJWT with a freshly generated RSA (2048) or EC (P-256) key.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.deploy.standins import serve

__all__ = [
    "AUDIENCE",
    "GITHUB",
    "GOOGLE",
    "Issuer",
    "KeyServer",
    "PrivateKey",
    "github_claims",
    "google_claims",
    "k8s_claims",
    "new_key",
]

AUDIENCE = "gocachegate"
GOOGLE = "https://accounts.google.com"
GITHUB = "https://token.actions.githubusercontent.com"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_key(kind: str = "rsa") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "RS256"
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "ES256"
    jwk.update(kid=kid, use="sig")
    return jwk


class Issuer:
    """An OIDC issuer's signing keys; ``sign`` picks the key by ``kid`` (the first one by default)."""

    def __init__(self, name: str, kinds: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.keys: dict[str, PrivateKey] = {kid: new_key(kind) for kid, kind in (kinds or {"k1": "rsa"}).items()}

    def add_key(self, kid: str, kind: str = "rsa") -> None:
        self.keys[kid] = new_key(kind)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [_public_jwk(key, kid) for kid, key in self.keys.items()]}

    def write_jwks(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.jwks()))
        return path

    def sign(self, claims: Mapping[str, Any], *, kid: str | None = None, key: PrivateKey | None = None,
             alg: str | None = None) -> str:
        kid = kid or next(iter(self.keys))
        key = key if key is not None else self.keys[kid]
        alg = alg or ("RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(dict(claims), key, algorithm=alg, headers={"kid": kid})


def _times(lifetime: int, issued: float | None = None) -> dict[str, int]:
    now = int(issued if issued is not None else time.time())
    return {"iat": now, "nbf": now, "exp": now + lifetime}


def k8s_claims(issuer: str, account: str, namespace: str = "test-pods", *, audience: str = AUDIENCE,
               lifetime: int = 3600, **extra: Any) -> dict[str, Any]:
    """A projected ServiceAccount token, as the kubelet mounts it for a pod."""
    return {
        "iss": issuer,
        "sub": f"system:serviceaccount:{namespace}:{account}",
        "aud": [audience],
        **_times(lifetime),
        "kubernetes.io": {
            "namespace": namespace,
            "pod": {"name": f"job-{uuid.uuid4().hex[:8]}", "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
        },
        **extra,
    }


def google_claims(email: str, *, audience: str = AUDIENCE, verified: bool = True, lifetime: int = 3600,
                  **extra: Any) -> dict[str, Any]:
    """A Google ID token of a service account (``gcloud auth print-identity-token --audiences=...``)."""
    return {
        "iss": GOOGLE,
        "aud": audience,
        "azp": "1045" + "0" * 17,
        "sub": str(uuid.uuid4().int)[:21],
        "email": email,
        "email_verified": verified,
        **_times(lifetime),
        **extra,
    }


def github_claims(repository: str, *, event_name: str, ref: str, audience: str = AUDIENCE,
                  lifetime: int = 300, **extra: Any) -> dict[str, Any]:
    """A GitHub Actions OIDC token (``core.getIDToken(audience)``) for one workflow run."""
    subject = f"repo:{repository}:pull_request" if event_name == "pull_request" else f"repo:{repository}:ref:{ref}"
    return {
        "iss": GITHUB,
        "aud": audience,
        "sub": subject,
        "repository": repository,
        "repository_owner": repository.split("/")[0],
        "ref": ref,
        "ref_type": "branch",
        "event_name": event_name,
        "workflow": "ci",
        "jti": str(uuid.uuid4()),
        **_times(lifetime),
        **extra,
    }


class KeyServer:
    """JWK sets over HTTP on loopback, one per name: ``/{name}/jwks`` and, for issuers named by
    their URL here, ``/{name}/.well-known/openid-configuration``. Counts the fetches of each."""

    def __init__(self) -> None:
        self.sets: dict[str, Issuer] = {}
        self.fetches: Counter[str] = Counter()
        self.discoveries: Counter[str] = Counter()
        self.stall: set[str] = set()  # names whose requests never get an answer
        self._lock = threading.Lock()
        self.url = ""

    def publish(self, name: str, issuer: Issuer) -> str:
        """Serve ``issuer``'s keys under ``name``; returns the jwks_uri."""
        self.sets[name] = issuer
        return f"{self.url}/{name}/jwks"

    def issuer_url(self, name: str) -> str:
        """An issuer URL whose discovery document this server answers."""
        return f"{self.url}/{name}"

    def _answer(self, name: str, rest: str) -> tuple[int, Any]:
        issuer = self.sets.get(name)
        if issuer is None:
            return 404, {"error": "no such issuer"}
        if rest == "jwks":
            return 200, issuer.jwks()
        if rest == ".well-known/openid-configuration":
            return 200, {"issuer": self.issuer_url(name), "jwks_uri": f"{self.url}/{name}/jwks",
                         "id_token_signing_alg_values_supported": ["RS256", "ES256"]}
        return 404, {"error": "not found"}

    def _count(self, name: str, rest: str) -> None:
        with self._lock:
            if rest == "jwks":
                self.fetches[name] += 1
            elif rest == ".well-known/openid-configuration":
                self.discoveries[name] += 1

    @contextmanager
    def running(self) -> Iterator[KeyServer]:
        server = self
        release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name, _, rest = self.path.strip("/").partition("/")
                server._count(name, rest)
                if name in server.stall:
                    release.wait(30)
                    return
                status, answer = server._answer(name, rest)
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        with serve(Handler) as url:
            self.url = url
            try:
                yield self
            finally:
                release.set()
