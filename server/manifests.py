"""Build manifests: the action ids one go command used, stored per namespace and command key.

Key layout::

    manifests/{namespace}/{key}

A writer's helper sends its command's manifest at close; it replaces the previous one (a plain
overwrite: the newest run of a command knows best what its next run needs). Readers read them
but never write them: their ids may come from untrusted code, and a manifest decides what every
later job of the namespace downloads. The format is the helper's (``cacheprog/manifest.py``)::

    b"GCM1" | u32 big-endian n | n bytes of JSON {"description": ...} | 32-byte action ids

The gate checks the frame and the count, and stores the bytes as they came.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import BadRequest, TooLarge
from .storage.base import Storage

__all__ = [
    "KEY",
    "MANIFEST_PREFIX",
    "MAX_IDS",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "check_key",
    "get_manifest",
    "manifest_key",
    "parse_manifest",
    "put_manifest",
    "read_limited",
    "read_manifest",
]

log = logging.getLogger("gocachegate.manifests")

MANIFEST_PREFIX = "manifests/"
_MAGIC = b"GCM1"
_LENGTH = struct.Struct(">I")
#: Ids in one manifest (or one prefetch request) at most.
MAX_IDS = 100_000
_MAX_HEADER = 16 << 10
MAX_MANIFEST_BYTES = 8 + _MAX_HEADER + 32 * MAX_IDS
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class Manifest:
    description: str
    ids: list[str]  # hex, in the order go first asked for them
    created: int | None = None  # unix seconds, when the helper made it


def manifest_key(namespace: str, key: str) -> str:
    return f"{MANIFEST_PREFIX}{namespace}/{key}"


def check_key(key: str) -> str:
    if KEY.fullmatch(key) is None:
        raise BadRequest(
            f"bad manifest key {key[:140]!r}: want 1-128 of [A-Za-z0-9._-], starting with a letter or digit"
        )
    return key


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``; ValueError if it is not one (or has more than ``MAX_IDS`` ids)."""
    if len(data) < 8 or data[:4] != _MAGIC:
        raise ValueError("not a manifest (want GCM1)")
    length = _LENGTH.unpack_from(data, 4)[0]
    start = 8 + length
    if length > _MAX_HEADER or start > len(data):
        raise ValueError("manifest header too long or truncated")
    header = json.loads(data[8:start])
    description = header.get("description", "") if isinstance(header, dict) else None
    if not isinstance(description, str):
        raise ValueError("manifest header is not an object with a description")
    created = header.get("created")
    ids = data[start:]
    if len(ids) % 32:
        raise ValueError("manifest ids are not whole 32-byte ids")
    if len(ids) // 32 > MAX_IDS:
        raise ValueError(f"manifest has more than {MAX_IDS} ids")
    return Manifest(description, [ids[i : i + 32].hex() for i in range(0, len(ids), 32)],
                    created if isinstance(created, int) and not isinstance(created, bool) else None)


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A request body of at most ``limit`` bytes; raises TooLarge past it."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"body is over the limit of {limit} bytes")
    return bytes(body)


async def read_manifest(storage: Storage, namespace: str, key: str) -> tuple[bytes, Manifest] | None:
    """The stored manifest as stored and parsed (one storage read), or None. An unreadable one is
    logged and is None."""
    reader = await storage.read(manifest_key(namespace, key))
    if reader is None:
        return None
    try:
        data = bytearray(reader.head)
        if reader.rest is not None:
            async for chunk in reader.rest:
                data += chunk
    finally:
        await reader.aclose()
    stored = bytes(data)
    try:
        manifest = parse_manifest(stored)
    except ValueError as exc:
        log.warning("ignoring unreadable manifest %s: %s", manifest_key(namespace, key), exc)
        return None
    return stored, manifest


async def get_manifest(storage: Storage, namespace: str, key: str) -> bytes | None:
    """The stored manifest's bytes (one storage read), or None (``read_manifest``)."""
    found = await read_manifest(storage, namespace, key)
    return None if found is None else found[0]


async def put_manifest(storage: Storage, namespace: str, key: str, data: bytes, writer: str) -> Manifest:
    """Check and store a manifest (one storage write), replacing the previous one; raises BadRequest."""
    try:
        manifest = parse_manifest(data)
    except ValueError as exc:
        raise BadRequest(f"bad manifest: {exc}") from exc
    metadata = {
        "ids": str(len(manifest.ids)),
        "writer": writer,
        "put_time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    await storage.write(manifest_key(namespace, key), data, len(data), metadata, create_only=False)
    return manifest
