"""What the cache holds, as admins see it: entries listed, counted, shown, deleted and purged, and
the build manifests listed, shown and deleted.

Everything is read from listings: an entry's fields are its object's metadata (see
``server/entries.py``), so no entry is opened, and memory holds one listing page at a time whatever
the size of a namespace. Entry keys are ``ac/{ns}/{action[:2]}/{action}``, so a namespace, and an
action-id prefix within it, narrow the listing itself; an action-id prefix across all namespaces
filters a listing of everything, a bounded number of objects per call.

Page tokens are the backend's, sealed with the listing they belong to, so that a token from another
query is refused (400) instead of silently listing something else.

A purge lists and deletes in batches, a bounded time per call; when time runs out the answer holds
a ``next_page_token`` to go on from. Deleting is idempotent: a repeat deletes nothing more and
counts only what it deleted itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from .entries import ENTRY_PREFIX, entry_key, namespace_prefix
from .errors import BadRequest, NotFound
from .manifests import KEY as MANIFEST_KEY
from .manifests import MANIFEST_PREFIX, check_key, manifest_key, read_manifest
from .names import HEX_ID, NAMESPACE, check_hex_id, check_namespace
from .storage.base import ListPage, ObjectInfo, Storage
from .timespec import rfc3339

__all__ = [
    "EntryInfo",
    "EntryPage",
    "Inventory",
    "ManifestDetail",
    "ManifestInfo",
    "ManifestPage",
    "NamespaceStats",
    "PurgeResult",
    "Stats",
]

_PAGE = 1000  # objects per listing call (GCS's maximum)
_SCAN_MAX = 10 * _PAGE  # objects one listing call may look at when filtering across namespaces
_DELETE_PARALLEL = 16
_PURGE_SECONDS = 20.0  # a purge call stops after this and answers with where to go on
_TOKEN_TAG = b"gocachegate/inventory/page-token\0"
_PREFIX_MAX = 64


class EntryInfo(BaseModel):
    """One cache entry, from its object's metadata."""

    namespace: str
    action_id: str
    output_id: str
    size: int = Field(description="bytes Go put (decoded)")
    stored_size: int = Field(description="bytes stored (framed, maybe zstd)")
    put_time: str = Field(description="RFC 3339")
    writer: str = Field(description="the subject that put it")
    compute_ms: int | None = Field(description="how long Go took to produce it, if the helper said")
    last_used: str = Field(description="RFC 3339: the retention clock (moved by hits), else the write time")


class EntryPage(BaseModel):
    entries: list[EntryInfo]
    next_page_token: str | None


class ManifestInfo(BaseModel):
    """One build manifest, from its object's metadata (docs/prefetch.md)."""

    namespace: str
    key: str = Field(description="the command's manifest key")
    ids: int | None = Field(description="action ids it lists (what a prefetch with it asks for)")
    stored_size: int = Field(description="bytes stored")
    put_time: str = Field(description="RFC 3339: when a writer last sent it")
    writer: str = Field(description="the subject that sent it")


class ManifestPage(BaseModel):
    manifests: list[ManifestInfo]
    next_page_token: str | None


class ManifestDetail(ManifestInfo):
    """A manifest read whole: which go command it is for, and when the helper made it."""

    description: str = Field(description="the key's parts, one per line: toolchain, environment, module, "
                                         "directory, arguments (or the override)")
    created: str | None = Field(description="RFC 3339: when the helper made it")


class NamespaceStats(BaseModel):
    entries: int = 0
    bytes: int = Field(default=0, description="bytes Go put (decoded)")
    stored_bytes: int = Field(default=0, description="bytes stored, as billed")


class Stats(NamespaceStats):
    namespaces: dict[str, NamespaceStats]


class PurgeResult(BaseModel):
    deleted: int = Field(description="entries deleted (with dry_run: that would be)")
    bytes: int = Field(description="their decoded bytes")
    stored_bytes: int = Field(description="their stored bytes")
    scanned: int = Field(description="entries looked at")
    dry_run: bool
    next_page_token: str | None = Field(description="not done yet: repeat with this page_token to go on")


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isascii() and value.isdigit() else None


def _last_used(info: ObjectInfo) -> datetime:
    return info.custom_time or info.updated


def _entry(info: ObjectInfo) -> EntryInfo | None:
    """The entry an object holds, or None for an object that is not one."""
    namespace, _, rest = info.key.removeprefix(ENTRY_PREFIX).partition("/")
    fan, _, action = rest.partition("/")
    if HEX_ID.fullmatch(action) is None or fan != action[:2]:
        return None
    meta = info.metadata
    return EntryInfo(
        namespace=namespace,
        action_id=action,
        output_id=meta.get("output_id", ""),
        size=_int(meta.get("size")) or 0,
        stored_size=info.size,
        put_time=meta.get("put_time", ""),
        writer=meta.get("writer", ""),
        compute_ms=_int(meta.get("compute_ms")),
        last_used=rfc3339(_last_used(info)),
    )


def _manifest(info: ObjectInfo) -> ManifestInfo | None:
    """The manifest an object holds, or None for an object that is not one."""
    namespace, _, key = info.key.removeprefix(MANIFEST_PREFIX).partition("/")
    if NAMESPACE.fullmatch(namespace) is None or MANIFEST_KEY.fullmatch(key) is None:
        return None
    meta = info.metadata
    return ManifestInfo(
        namespace=namespace,
        key=key,
        ids=_int(meta.get("ids")),
        stored_size=info.size,
        put_time=meta.get("put_time") or rfc3339(info.updated),
        writer=meta.get("writer", ""),
    )


def _check_prefix(prefix: str) -> str:
    if len(prefix) > _PREFIX_MAX or (prefix and HEX_ID.fullmatch(prefix.ljust(64, "0")) is None):
        raise BadRequest(f"bad prefix {prefix[:80]!r}: want up to 64 lowercase hex characters of an action id")
    return prefix


def _listing_prefix(namespace: str | None, prefix: str) -> str:
    """The narrowest storage prefix holding every entry of ``namespace`` whose action starts with ``prefix``."""
    if namespace is None:
        return ENTRY_PREFIX
    base = namespace_prefix(namespace)
    return base + prefix if len(prefix) <= 2 else f"{base}{prefix[:2]}/{prefix}"


def _seal(kind: str, namespace: str | None, prefix: str, token: str) -> str:
    raw = json.dumps([kind, namespace, prefix, token]).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(_TOKEN_TAG + raw).digest()[:8] + raw).decode()


def _open(kind: str, namespace: str | None, prefix: str, sealed: str) -> str:
    try:
        data = base64.urlsafe_b64decode(sealed.encode("ascii"))
        check, raw = data[:8], data[8:]
        if hashlib.sha256(_TOKEN_TAG + raw).digest()[:8] != check:
            raise ValueError("checksum")
        fields = json.loads(raw)
        if not isinstance(fields, list) or len(fields) != 4:
            raise ValueError("shape")
        made_for, token = fields[:3], fields[3]
    except (ValueError, UnicodeError, binascii.Error, TypeError, IndexError) as exc:
        raise BadRequest("bad page_token: not one this gate made") from exc
    if made_for != [kind, namespace, prefix] or not isinstance(token, str):
        raise BadRequest("bad page_token: it belongs to another listing (same ns and prefix as the first call)")
    return token


class Inventory:
    """Admin operations on the entries in ``storage``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def _page(self, prefix: str, token: str | None, limit: int) -> ListPage:
        try:
            return await self.storage.list(prefix, page_token=token, limit=limit)
        except ValueError as exc:  # the backend refused the token inside our seal
            raise BadRequest(f"bad page_token: {exc}") from exc

    async def _objects(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        token: str | None = None
        while True:
            page = await self._page(prefix, token, _PAGE)
            for info in page.items:
                yield info
            token = page.next_token
            if token is None:
                return

    async def stats(self) -> Stats:
        """Entries and bytes per namespace: one pass over the listing, memory per namespace."""
        namespaces: dict[str, NamespaceStats] = {}
        async for info in self._objects(ENTRY_PREFIX):
            entry = _entry(info)
            if entry is None:
                continue
            ns = namespaces.get(entry.namespace)
            if ns is None:
                ns = namespaces[entry.namespace] = NamespaceStats()
            ns.entries += 1
            ns.bytes += entry.size
            ns.stored_bytes += entry.stored_size
        ordered = dict(sorted(namespaces.items()))
        return Stats(
            entries=sum(ns.entries for ns in ordered.values()),
            bytes=sum(ns.bytes for ns in ordered.values()),
            stored_bytes=sum(ns.stored_bytes for ns in ordered.values()),
            namespaces=ordered,
        )

    async def entries(self, namespace: str | None, prefix: str, limit: int, page_token: str | None) -> EntryPage:
        """Up to ``limit`` entries in key order; fewer (even none) with a ``next_page_token`` when a
        filter across namespaces ran through its scan bound first."""
        if namespace is not None:
            check_namespace(namespace)
        _check_prefix(prefix)
        listing = _listing_prefix(namespace, prefix)
        token = None if page_token is None else _open("entries", namespace, prefix, page_token)
        found: list[EntryInfo] = []
        scanned = 0
        while True:
            page = await self._page(listing, token, limit - len(found))
            scanned += len(page.items)
            for info in page.items:
                entry = _entry(info)
                if entry is not None and entry.action_id.startswith(prefix):
                    found.append(entry)
            token = page.next_token
            if token is None or len(found) >= limit or scanned >= _SCAN_MAX:
                break
        return EntryPage(
            entries=found, next_page_token=None if token is None else _seal("entries", namespace, prefix, token)
        )

    async def get(self, namespace: str, action: str) -> EntryInfo:
        info = await self.storage.stat(entry_key(check_namespace(namespace), check_hex_id(action)))
        entry = None if info is None else _entry(info)
        if entry is None:
            raise NotFound("no such entry")
        return entry

    async def delete(self, namespace: str, action: str) -> None:
        if not await self.storage.delete(entry_key(check_namespace(namespace), check_hex_id(action))):
            raise NotFound("no such entry")

    async def manifests(self, namespace: str | None, limit: int, page_token: str | None) -> ManifestPage:
        """Up to ``limit`` manifests in key order (namespace, then key), from the listing alone."""
        if namespace is not None:
            check_namespace(namespace)
        listing = MANIFEST_PREFIX if namespace is None else f"{MANIFEST_PREFIX}{namespace}/"
        token = None if page_token is None else _open("manifests", namespace, "", page_token)
        page = await self._page(listing, token, limit)
        found = [m for info in page.items if (m := _manifest(info)) is not None]
        next_token = None if page.next_token is None else _seal("manifests", namespace, "", page.next_token)
        return ManifestPage(manifests=found, next_page_token=next_token)

    async def manifest(self, namespace: str, key: str) -> ManifestDetail:
        """One manifest read whole (a metadata read and a read): what its description says."""
        info = await self.storage.stat(manifest_key(check_namespace(namespace), check_key(key)))
        listed = None if info is None else _manifest(info)
        found = None if listed is None else await read_manifest(self.storage, namespace, key)
        if listed is None or found is None:  # an unreadable one is ignored by prefetches too (logged)
            raise NotFound("no such manifest")
        manifest = found[1]
        created = None
        if manifest.created is not None:
            with contextlib.suppress(OverflowError, ValueError, OSError):
                created = rfc3339(datetime.fromtimestamp(manifest.created, UTC))
        return ManifestDetail(**{**listed.model_dump(), "ids": len(manifest.ids)},
                              description=manifest.description, created=created)

    async def delete_manifest(self, namespace: str, key: str) -> None:
        if not await self.storage.delete(manifest_key(check_namespace(namespace), check_key(key))):
            raise NotFound("no such manifest")

    async def purge(
        self,
        *,
        namespace: str | None,
        older_than: timedelta | None,
        prefix: str,
        dry_run: bool,
        page_token: str | None = None,
        limit: int | None = None,
        seconds: float = _PURGE_SECONDS,
    ) -> PurgeResult:
        """Delete the entries that match every filter given: in ``namespace``, with an action id
        starting with ``prefix``, not used (written or hit) for ``older_than``.

        Looks at up to ``limit`` entries, for up to ``seconds``; then answers with a page token.
        """
        if namespace is None and older_than is None and not prefix:
            raise BadRequest("refusing to purge every entry: give namespace, older_than or prefix")
        if namespace is not None:
            check_namespace(namespace)
        _check_prefix(prefix)
        cutoff = None if older_than is None else datetime.now(UTC) - older_than
        listing = _listing_prefix(namespace, prefix)
        token = None if page_token is None else _open("purge", namespace, prefix, page_token)
        deadline = time.monotonic() + seconds
        result = PurgeResult(deleted=0, bytes=0, stored_bytes=0, scanned=0, dry_run=dry_run, next_page_token=None)
        while True:
            want = _PAGE if limit is None else min(_PAGE, limit - result.scanned)
            page = await self._page(listing, token, want)
            result.scanned += len(page.items)
            victims = [
                (info, entry)
                for info in page.items
                if (entry := _entry(info)) is not None
                and entry.action_id.startswith(prefix)
                and (cutoff is None or _last_used(info) < cutoff)
            ]
            gone = victims if dry_run else await self._delete_all(victims)
            result.deleted += len(gone)
            result.bytes += sum(entry.size for _, entry in gone)
            result.stored_bytes += sum(info.size for info, _ in gone)
            token = page.next_token
            if token is None or time.monotonic() >= deadline or (limit is not None and result.scanned >= limit):
                break
        result.next_page_token = None if token is None else _seal("purge", namespace, prefix, token)
        return result

    async def _delete_all(self, victims: list[tuple[ObjectInfo, EntryInfo]]) -> list[tuple[ObjectInfo, EntryInfo]]:
        """The victims this call deleted (one deleted by someone else meanwhile is not counted)."""
        slots = asyncio.Semaphore(_DELETE_PARALLEL)

        async def delete(info: ObjectInfo) -> bool:
            async with slots:
                return await self.storage.delete(info.key)

        deleted = await asyncio.gather(*(delete(info) for info, _ in victims))
        return [victim for victim, done in zip(victims, deleted, strict=True) if done]
