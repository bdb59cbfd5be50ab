"""The GOCACHEPROG wire format (Go 1.24+, ``cmd/go/internal/cacheprog``), and nothing else.

The go command writes one JSON request per line (followed by an empty line), and for a ``put``
with ``BodySize > 0`` a second line holding the body as a base64 JSON string. The helper writes
one JSON response per line, in any order; the first one (ID 0) lists the commands it knows.
Byte fields (``ActionID``, ``OutputID``) are base64, as Go's encoding/json writes ``[]byte``.
"""

from __future__ import annotations

import binascii
import json
from datetime import datetime
from typing import NamedTuple

__all__ = ["ProtocolError", "Request", "Response", "decode_body", "parse_request"]

#: One encoder for every response: ``json.dumps`` with ``separators`` builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class ProtocolError(Exception):
    """A request the helper cannot act on; answered with ``Err`` when its ID is known."""

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class Request(NamedTuple):
    id: int
    command: str  # "get", "put", "close" (anything else is answered with an error)
    action_id: bytes = b""  # 32 bytes for get and put
    output_id: bytes = b""  # 32 bytes for put: SHA-256 of the body
    body_size: int = 0  # put: the body follows on its own line when > 0


class Response(NamedTuple):
    id: int
    err: str = ""
    miss: bool = False
    output_id: bytes = b""
    size: int = 0
    time: datetime | None = None  # when the entry was put; go uses it to expire test results
    disk_path: str = ""

    def encode(self) -> bytes:
        """One line of JSON, the way Go's decoder expects it (empty fields left out)."""
        out: dict[str, object] = {"ID": self.id}
        if self.err:
            out["Err"] = self.err
        if self.miss:
            out["Miss"] = True
        if self.output_id:
            out["OutputID"] = binascii.b2a_base64(self.output_id, newline=False).decode()
        if self.size:
            out["Size"] = self.size
        if self.time is not None:
            out["Time"] = self.time.isoformat()
        if self.disk_path:
            out["DiskPath"] = self.disk_path
        return _ENCODE(out).encode() + b"\n"


def _id_field(raw: dict[str, object], name: str, request_id: int) -> bytes:
    value = raw.get(name)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ProtocolError(f"{name} is not a base64 string", request_id)
    try:
        decoded = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: not ASCII
        raise ProtocolError(f"{name} is not valid base64", request_id) from exc
    if len(decoded) != 32:
        raise ProtocolError(f"{name} has {len(decoded)} bytes, want 32", request_id)
    return decoded


def parse_request(line: bytes) -> Request:
    """Decode one request line; raises ProtocolError (with the ID when it could be read)."""
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"request is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("request is not a JSON object")
    request_id = raw.get("ID")
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise ProtocolError("request has no integer ID")
    command = raw.get("Command")
    body_size = raw.get("BodySize", 0)
    if not isinstance(command, str):
        raise ProtocolError("request has no Command", request_id)
    if not isinstance(body_size, int) or body_size < 0:
        raise ProtocolError("BodySize is not a non-negative integer", request_id)
    # Go's older helpers named the output "ObjectID"; accept both.
    output_key = "OutputID" if "OutputID" in raw else "ObjectID"
    return Request(
        id=request_id,
        command=command,
        action_id=_id_field(raw, "ActionID", request_id),
        output_id=_id_field(raw, output_key, request_id),
        body_size=body_size,
    )


def decode_body(line: bytes, request: Request) -> bytes:
    """Decode a put's body line (a base64 JSON string) and check it has ``BodySize`` bytes."""
    text = line.strip()
    if len(text) < 2 or text[:1] != b'"' or text[-1:] != b'"':
        raise ProtocolError("put body is not a JSON string", request.id)
    try:
        body = binascii.a2b_base64(text[1:-1], strict_mode=True)
    except binascii.Error as exc:
        raise ProtocolError(f"put body is not valid base64: {exc}", request.id) from exc
    if len(body) != request.body_size:
        raise ProtocolError(f"put body has {len(body)} bytes, BodySize says {request.body_size}", request.id)
    return body
