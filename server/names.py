"""The names a client may use: checked before they reach storage keys or paths.

Precompiled and anchored (``fullmatch``): this runs on every request of the hit path.
"""

from __future__ import annotations

import re

from .errors import BadRequest

__all__ = ["HEX_ID", "NAMESPACE", "check_hex_id", "check_namespace"]

NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HEX_ID = re.compile(r"[0-9a-f]{64}")


def check_namespace(namespace: str) -> str:
    if NAMESPACE.fullmatch(namespace) is None:
        raise BadRequest(
            f"bad namespace {namespace[:140]!r}: want 1-128 of [A-Za-z0-9._-], starting with a letter or digit"
        )
    return namespace


def check_hex_id(value: str, what: str = "action id") -> str:
    if HEX_ID.fullmatch(value) is None:
        raise BadRequest(f"bad {what} {value[:80]!r}: want 64 lowercase hex characters")
    return value
