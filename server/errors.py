"""Every error the gate answers with, and the one place that turns them into HTTP.

Services raise these; the exception handlers in ``server/app.py`` map each to JSON
``{"error": reason}`` with its status. Errors of the libraries underneath are converted at the
boundary (``raise BadRequest(...) from exc``), so no traceback ever reaches a client::

    GateError(status, reason)
    ├── BadRequest       400  a bad name, header or body; a digest that does not match
    ├── Unauthorized     401  no token, or one that fails verification (carries WWW-Authenticate)
    ├── Forbidden        403  a valid identity whose role or namespaces do not allow this
    ├── NotFound         404  no such entry
    ├── TooLarge         413  over ``limits.max_entry_bytes``
    └── Unavailable      503  not ready: storage unreachable, or shutting down

Storage failures keep their own tree (``server.storage.base``): ``StorageUnavailable`` answers
503, any other ``StorageError`` 500 with a generic reason (the detail goes to the log only).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BadRequest",
    "Forbidden",
    "GateError",
    "NotFound",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]


class GateError(Exception):
    """An answer other than success, with the one-line reason the client sees."""

    status: int = 500

    def __init__(self, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers: Mapping[str, str] = headers or {}


class BadRequest(GateError):
    status = 400


class Unauthorized(GateError):
    status = 401

    def __init__(self, reason: str, *, token_given: bool = False) -> None:
        # RFC 6750: a rejected token says invalid_token; a missing one only names the scheme.
        challenge = 'Bearer realm="gocachegate"'
        if token_given:
            challenge += ', error="invalid_token"'
        super().__init__(reason, {"WWW-Authenticate": challenge})


class Forbidden(GateError):
    status = 403


class NotFound(GateError):
    status = 404


class TooLarge(GateError):
    status = 413


class Unavailable(GateError):
    status = 503
