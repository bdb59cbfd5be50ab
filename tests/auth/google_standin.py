"""Loopback stand-ins for the Google endpoints google-auth calls to mint an ID token, each checking
its request the way Google documents it, and answering with ID tokens signed by a test "Google".

- ``POST /token``: a service account key's ``token_uri``. The JWT-bearer grant whose assertion, signed
  with the key, carries ``target_audience`` (google.oauth2._client.id_token_jwt_grant).
- ``GET /``, ``GET /computeMetadata/v1/instance/service-accounts/default/`` and ``.../identity``:
  the metadata server's ping, the pod's service account and its identity endpoint
  (google.auth.compute_engine), found through ``GCE_METADATA_IP`` and ``GCE_METADATA_HOST``.
- ``POST /v1/token`` and ``POST /v1/projects/-/serviceAccounts/EMAIL:generateIdToken``: Google's STS
  (the Kubernetes token of an ``external_account`` file for a federated token; the deploy tests'
  stand-in, ``tests.deploy.standins.GoogleIdentity``) and the IAM
  Credentials API (that token for an ID token of the service account). google-auth calls the latter
  at ``https://iamcredentials.googleapis.com`` whatever the file says, so ``TlsInterceptor`` is an
  HTTPS proxy on loopback that presents a certificate for that name from a test CA (trusted through
  ``REQUESTS_CA_BUNDLE``) and hands the request to the stand-in: nothing leaves the machine.
"""

from __future__ import annotations

import datetime
import http.client
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.auth.issuer import GOOGLE, Issuer, google_claims
from tests.deploy.standins import GoogleIdentity, serve

__all__ = ["GoogleStandIn", "TlsInterceptor", "service_account_key", "wif_credentials"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: The audience of a key's assertion, whatever its token_uri (google.oauth2.service_account).
OAUTH2_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


@dataclass
class GoogleStandIn:
    """Mints ID tokens for ``email`` through each of the three paths; counts the calls of each."""

    email: str
    subject_issuer: Issuer  # the workload's own issuer (Kubernetes), trusted by the STS
    pool_audience: str  # the workload identity provider, as the external_account file names it
    lifetime: int = 3600  # of the ID tokens it mints
    google: Issuer = field(default_factory=lambda: Issuer(GOOGLE))
    sa_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    calls: dict[str, int] = field(default_factory=dict)
    audiences: list[str] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sts: GoogleIdentity = field(init=False)

    def __post_init__(self) -> None:
        key = self.subject_issuer.keys["k1"]
        self._sts = GoogleIdentity(self.subject_issuer.name, key.public_key(), self.pool_audience)

    def _count(self, what: str, audience: str | None = None) -> None:
        with self._lock:
            self.calls[what] = self.calls.get(what, 0) + 1
            if audience is not None:
                self.audiences.append(audience)

    def id_token(self, audience: str) -> str:
        return self.google.sign(google_claims(self.email, audience=audience, lifetime=self.lifetime))

    # -- the endpoints -----------------------------------------------------------------------------

    def key_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != JWT_BEARER:
            return 400, {"error": "unsupported_grant_type"}
        try:
            claims = jwt.decode(form.get("assertion", ""), self.sa_key.public_key(), algorithms=["RS256"],
                                audience=OAUTH2_TOKEN_ENDPOINT, issuer=self.email)
        except jwt.PyJWTError as exc:
            return 400, {"error": "invalid_grant", "error_description": str(exc)}
        audience = claims.get("target_audience")
        if not audience:
            return 400, {"error": "invalid_request", "error_description": "no target_audience"}
        self._count("key", audience)
        return 200, {"id_token": self.id_token(audience)}

    def metadata_identity(self, query: dict[str, str]) -> tuple[int, str]:
        if query.get("format") != "full" or not query.get("audience"):
            return 400, "bad request"
        self._count("metadata", query["audience"])
        return 200, self.id_token(query["audience"])

    def sts(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status, answer = self._sts.sts(form)
        if status == 200:
            self._count("sts")
        return status, answer

    def generate_id_token(self, path: str, authorization: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        account = urllib.parse.unquote(path.rpartition("/serviceAccounts/")[2].removesuffix(":generateIdToken"))
        try:
            self._sts.subject_of(authorization.removeprefix("Bearer "))
        except KeyError:
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
        if account != self.email or not body.get("audience"):
            return 403, {"error": {"code": 403, "status": "PERMISSION_DENIED"}}
        self._count("generateIdToken", body["audience"])
        return 200, {"token": self.id_token(body["audience"])}

    # -- serving -----------------------------------------------------------------------------------

    def handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._send(403, b"Missing Metadata-Flavor header", "text/plain")
                    return
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/":
                    self._send(200, b"ok", "text/plain")
                elif url.path == "/computeMetadata/v1/instance/service-accounts/default/":
                    info = {"aliases": ["default"], "email": standin.email, "scopes": [_CLOUD_PLATFORM]}
                    self._send(200, json.dumps(info).encode(), "application/json")
                elif url.path == "/computeMetadata/v1/instance/service-accounts/default/identity":
                    status, text = standin.metadata_identity(dict(urllib.parse.parse_qsl(url.query)))
                    self._send(status, text.encode(), "text/plain")
                else:
                    self._send(404, b"not found", "text/plain")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/token":
                    status, answer = standin.key_grant(dict(urllib.parse.parse_qsl(raw.decode())))
                elif self.path == "/v1/token":
                    status, answer = standin.sts(dict(urllib.parse.parse_qsl(raw.decode())))
                elif self.path.endswith(":generateIdToken"):
                    status, answer = standin.generate_id_token(
                        self.path, self.headers.get("Authorization", ""), json.loads(raw or b"{}"))
                else:
                    status, answer = 404, {"error": "not a Google endpoint google-auth should call here"}
                self._send(status, json.dumps(answer).encode(), "application/json")

        return Handler

    @contextmanager
    def running(self) -> Iterator[GoogleStandIn]:
        with serve(self.handler()) as url:
            self.url = url
            yield self


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
                 ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signer, hashes.SHA256())


class TlsInterceptor:
    """An HTTPS proxy on loopback that answers CONNECT to ``host`` itself: TLS with a certificate
    from its own CA, then each request relayed in plain HTTP to ``upstream`` (a stand-in)."""

    def __init__(self, host: str, upstream: str, directory: Path) -> None:
        self.host = host
        self.upstream = urllib.parse.urlsplit(upstream)
        self.tunnels: list[str] = []  # CONNECT targets, for the test to see what went where
        ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gocachegate test CA")])
        ca = _certificate("gocachegate test CA", ca_key, ca_name, ca_key, ca=True)
        leaf = _certificate(host, leaf_key, ca_name, ca_key, ca=False)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        chain = directory / "leaf.pem"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Relay(_Quiet):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection(proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port,
                                                      timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    self._send(answer.status, answer.read(), answer.getheader("Content-Type") or "text/plain")
                finally:
                    upstream.close()

            do_GET = do_POST = _relay

        class Connect(_Quiet):
            def do_CONNECT(self) -> None:
                target = self.path.rpartition(":")[0]
                proxy.tunnels.append(self.path)
                if target != proxy.host:
                    self.send_error(403, "this proxy only intercepts " + proxy.host)
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                tls = proxy.context.wrap_socket(self.connection, server_side=True)
                Relay(tls, self.client_address, self.server)
                self.close_connection = True

        return Connect

    @contextmanager
    def running(self) -> Iterator[str]:
        """Yields the proxy's URL, for ``HTTPS_PROXY``."""
        with serve(self.handler()) as url:
            yield url


def service_account_key(standin: GoogleStandIn, path: Path) -> Path:
    """A service account key file whose token_uri is the stand-in."""
    pem = standin.sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "my-project", "private_key_id": "0" * 40, "private_key": pem,
        "client_email": standin.email, "client_id": "1" * 21, "token_uri": f"{standin.url}/token",
    }))
    return path


def wif_credentials(standin: GoogleStandIn, token_file: Path, path: Path) -> Path:
    """An external_account file as ``gcloud iam workload-identity-pools create-cred-config`` writes it,
    the Kubernetes token read from ``token_file``, the STS at the stand-in."""
    path.write_text(json.dumps({
        "type": "external_account",
        "audience": standin.pool_audience,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{standin.url}/v1/token",
        "credential_source": {"file": str(token_file), "format": {"type": "text"}},
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
                                             f"{standin.email}:generateAccessToken",
    }))
    return path
