"""A Google ID token for the gate's audience, from google-auth (imported only when used).

Covers the ways a CI job reaches a Google identity: the GKE metadata server (Workload Identity),
a service account key, and an ``external_account`` file (Workload Identity Federation) with
service account impersonation, whose ID tokens come from the IAM credentials API.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

__all__ = ["GoogleIDToken"]


class GoogleIDToken:
    def __init__(self, audience: str) -> None:
        self._audience = audience
        self._lock = threading.Lock()
        self._credentials: Any = None

    def _load(self) -> Any:
        import google.auth
        import google.auth.transport.requests
        from google.auth import impersonated_credentials
        from google.oauth2 import id_token

        request = google.auth.transport.requests.Request()
        path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        kind = ""
        if path:
            with open(path) as f:
                kind = json.load(f).get("type", "")
        if kind in ("external_account", "impersonated_service_account"):
            # google-auth mints ID tokens for these only through an impersonated identity.
            source, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            target = getattr(source, "service_account_email", None) or getattr(
                source, "_target_principal", None)
            if not target:
                raise ValueError(f"{path}: no service account to impersonate for an ID token")
            impersonated = impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
                source_credentials=source, target_principal=target,
                target_scopes=["https://www.googleapis.com/auth/cloud-platform"])
            return impersonated_credentials.IDTokenCredentials(  # type: ignore[no-untyped-call]
                impersonated, target_audience=self._audience, include_email=True)
        return id_token.fetch_id_token_credentials(  # type: ignore[no-untyped-call]
            self._audience, request=request)

    def token(self) -> str | None:
        import google.auth.transport.requests

        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials = self._load()
                if not self._credentials.valid:
                    self._credentials.refresh(google.auth.transport.requests.Request())
            except Exception as exc:  # noqa: BLE001 - no token means the remote is unavailable, not a crash
                import sys

                sys.stderr.write(f"gocacheprog: no Google ID token: {exc}\n")
                return None
            token: str | None = self._credentials.token
            return token

    def refresh(self) -> None:
        with self._lock:
            if self._credentials is not None:
                self._credentials.expiry = None
                self._credentials.token = None
