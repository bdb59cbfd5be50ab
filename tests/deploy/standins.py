"""Loopback stand-ins for what the gate meets on its way to a bucket through Workload Identity Federation.

``GoogleIdentity`` plays Google's Security Token Service (``POST /v1/token``: a Kubernetes
ServiceAccount token for a federated access token) and the IAM Credentials API
(``POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken``: that token for the access token
of a Google service account), checking each request the way Google documents it. ``RecordingProxy``
sits in front of the storage emulator and keeps the ``Authorization`` header of every request, so a
test sees what the gate really sent to "Google Cloud Storage".
"""

from __future__ import annotations

import http.client
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

__all__ = ["Exchange", "GoogleIdentity", "ProxiedRequest", "RecordingProxy", "serve"]

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: Scopes under which an access token may call Cloud Storage at all.
STORAGE_SCOPES = {f"https://www.googleapis.com/auth/{s}" for s in
                  ("cloud-platform", "devstorage.full_control", "devstorage.read_write", "devstorage.read_only")}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
              "proxy-authorization", "proxy-connection", "content-length"}


@dataclass(frozen=True)
class Exchange:
    """One call that reached the stand-in, accepted or not."""

    path: str
    subject_token: str | None = None  # STS: the Kubernetes token it was given
    subject: str | None = None  # STS: that token's ``sub``, once verified
    bearer: str | None = None  # IAM: the federated token it was called with
    service_account: str | None = None  # IAM: whom it was asked to impersonate
    status: int = 200


@dataclass
class GoogleIdentity:
    """STS and IAM Credentials for one workload identity pool provider trusting one issuer.

    Tokens live ``lifetime`` seconds: shorter than google-auth's refresh margin, every storage call
    makes google-auth go through the whole exchange again, re-reading the projected token file.
    """

    issuer: str
    public_key: Any
    audience: str  # the provider, as the credential file's "audience": //iam.googleapis.com/projects/...
    lifetime: int = 60
    calls: list[Exchange] = field(default_factory=list)
    access_tokens: set[str] = field(default_factory=set)  # what IAM handed out: storage must see these
    _federated: dict[str, str] = field(default_factory=dict)  # STS token -> Kubernetes subject
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, call: Exchange) -> None:
        with self._lock:
            self.calls.append(call)

    def sts(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        token = form.get("subject_token", "")
        expected = {"grant_type": TOKEN_EXCHANGE, "requested_token_type": ACCESS_TOKEN_TYPE,
                    "subject_token_type": JWT_TOKEN_TYPE, "audience": self.audience}
        wrong = [k for k, v in expected.items() if form.get(k) != v]
        if wrong or not form.get("scope", "").split():
            self._record(Exchange("/v1/token", subject_token=token, status=400))
            return 400, {"error": "invalid_request", "error_description": f"bad {wrong or ['scope']}"}
        try:
            # Google accepts the provider's full name with or without "https:" as the token's audience.
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"], issuer=self.issuer,
                                audience=[self.audience, "https:" + self.audience])
        except jwt.PyJWTError as exc:
            self._record(Exchange("/v1/token", subject_token=token, status=400))
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        federated = "sts-" + secrets.token_urlsafe(16)
        with self._lock:
            self._federated[federated] = claims["sub"]
        self._record(Exchange("/v1/token", subject_token=token, subject=claims["sub"]))
        return 200, {"access_token": federated, "issued_token_type": ACCESS_TOKEN_TYPE,
                     "token_type": "Bearer", "expires_in": self.lifetime}

    def generate_access_token(self, path: str, authorization: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        bearer = authorization.removeprefix("Bearer ")
        account = urllib.parse.unquote(path.split("/serviceAccounts/", 1)[1].removesuffix(":generateAccessToken"))
        with self._lock:
            known = bearer in self._federated
        if not known:
            self._record(Exchange(path, bearer=bearer, service_account=account, status=401))
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
        if not any(scope in STORAGE_SCOPES for scope in body.get("scope", [])):
            self._record(Exchange(path, bearer=bearer, service_account=account, status=400))
            return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}
        token = "ya29.standin-" + secrets.token_urlsafe(16)
        expires = datetime.now(UTC) + timedelta(seconds=self.lifetime)
        with self._lock:
            self.access_tokens.add(token)
        self._record(Exchange(path, bearer=bearer, service_account=account))
        return 200, {"accessToken": token, "expireTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def subject_of(self, federated: str) -> str:
        with self._lock:
            return self._federated[federated]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        identity = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/v1/token":
                    form = dict(urllib.parse.parse_qsl(raw.decode()))
                    status, answer = identity.sts(form)
                elif self.path.startswith("/v1/projects/-/serviceAccounts/") and self.path.endswith(
                    ":generateAccessToken"
                ):
                    status, answer = identity.generate_access_token(
                        self.path, self.headers.get("Authorization", ""), json.loads(raw or b"{}")
                    )
                else:  # Resource Manager, metadata server...: nothing the deployed gate should need
                    identity._record(Exchange(self.path, status=404))
                    status, answer = 404, {"error": "not a Google endpoint the gate should call"}
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

        return Handler


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    authorization: str | None
    status: int


class RecordingProxy:
    """Forwards every request to ``upstream`` and remembers its method, path and Authorization."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(_Quiet):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    answer = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
                    status = response.status
                finally:
                    upstream.close()
                with proxy._lock:
                    proxy.requests.append(
                        ProxiedRequest(self.command, self.path, self.headers.get("Authorization"), status)
                    )
                self.send_response(status)
                for key, value in answer:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler

    def seen(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self.requests)


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port in a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="standin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
