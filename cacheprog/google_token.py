"""A Google ID token for the gate's audience, from google-auth (imported only when used).

Where the token comes from, as google-auth finds it:

- ``GOOGLE_APPLICATION_CREDENTIALS`` names an ``external_account`` file (Workload Identity
  Federation: a Kubernetes, GitHub Actions or AWS identity traded at Google's STS): Google gives ID
  tokens only to service accounts, so the federated token asks the IAM Credentials API for one of
  the service account the file impersonates (``impersonated_credentials.IDTokenCredentials``, the
  ``generateIdToken`` call; the federated principal needs ``roles/iam.workloadIdentityUser`` on it);
- it names a service account key or an ``impersonated_service_account`` file;
- else the metadata server (GKE Workload Identity, Compute Engine, Cloud Run).

google-auth and its HTTP stack (requests) take 0.35-0.45 s to import on a 2-core CI machine, and
go waits for the helper: the import and the first token run on a background thread started with
the source (the constructor returns in under 1 ms), while go is still busy, and requests wait for
that thread only when they need the token. A token is refreshed when
google-auth counts it stale (within 3 min 45 s of expiry), and at once after the gate refused it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

__all__ = ["GoogleIDToken"]

_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_AWS_SIGNED_REQUEST = "urn:ietf:params:aws:token-type:aws4_request"


def _federated_id_token_credentials(info: dict[str, Any], audience: str) -> Any:
    """ID token credentials for the service account an ``external_account`` file impersonates."""
    from google.auth import aws, identity_pool, impersonated_credentials

    url = info.get("service_account_impersonation_url") or ""
    email = url.rpartition("/serviceAccounts/")[2].removesuffix(":generateAccessToken")
    if not email:
        raise ValueError("the external_account file names no service account to impersonate "
                         "(service_account_impersonation_url): Google issues ID tokens to service accounts only")
    federated = {k: v for k, v in info.items()
                 if k not in ("service_account_impersonation_url", "service_account_impersonation")}
    aws_signed = federated.get("subject_token_type") == _AWS_SIGNED_REQUEST
    kind: Any = aws.Credentials if aws_signed else identity_pool.Credentials
    source = kind.from_info(federated, scopes=[_CLOUD_PLATFORM])
    target = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
        source_credentials=source, target_principal=email, target_scopes=[_CLOUD_PLATFORM])
    return impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
        target, target_audience=audience, include_email=True)


def _id_token_credentials(audience: str, request: Any) -> Any:
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if path:
        with open(path) as f:
            info = json.load(f)
        if isinstance(info, dict) and info.get("type") == "external_account":
            return _federated_id_token_credentials(info, audience)
    from google.oauth2 import id_token

    return id_token.fetch_id_token_credentials(audience, request=request)  # type: ignore[no-untyped-call]


class GoogleIDToken:
    def __init__(self, audience: str) -> None:
        self._audience = audience
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._failed = False  # a failure is not retried until the gate asks for a new token
        threading.Thread(target=self.token, name="google-id-token", daemon=True).start()

    def token(self) -> str | None:
        with self._lock:
            if self._failed:
                return None
            try:
                import google.auth.transport.requests
                from google.auth.credentials import TokenState

                request = google.auth.transport.requests.Request()
                if self._credentials is None:
                    self._credentials = _id_token_credentials(self._audience, request)
                if self._credentials.token_state is not TokenState.FRESH:
                    self._credentials.refresh(request)
            except Exception as exc:  # noqa: BLE001 - no token means the remote is unavailable, not a crash
                self._failed = True
                sys.stderr.write(f"gocacheprog: no Google ID token: {type(exc).__name__}: {exc}\n")
                return None
            token: str | None = self._credentials.token
            return token

    def refresh(self) -> None:
        with self._lock:
            self._failed = False
            if self._credentials is not None:
                self._credentials.token = None
