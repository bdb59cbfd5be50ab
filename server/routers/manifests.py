"""Build manifests and the streamed prefetch (docs/prefetch.md).

    GET  /v1/ns/{ns}/manifests/{key}   reader, writer, admin: the manifest's bytes, or 404
    PUT  /v1/ns/{ns}/manifests/{key}   writer, admin: store it, replacing the previous one (204)
    POST /v1/ns/{ns}/prefetch          reader, writer, admin: body = 32-byte action ids; answer =
                                       the stream of those entries (``server/prefetch.py``)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from ..deps import Access, NamespaceReader, NamespaceWriter
from ..errors import BadRequest, NotFound
from ..manifests import MAX_IDS, MAX_MANIFEST_BYTES, check_key, get_manifest, put_manifest, read_limited
from ..prefetch import PrefetchCounts, parse_ids, stream_entries
from ..usage.hooks import PrefetchUsage, count_prefetch

__all__ = ["router"]

router = APIRouter()

_MANIFEST_PATH = "/v1/ns/{ns:path}/manifests/{key:path}"
_OCTETS = "application/octet-stream"


async def _body(request: Request, limit: int) -> bytes:
    try:
        return await read_limited(request.stream(), limit)
    except ClientDisconnect as exc:
        raise BadRequest("client disconnected before the body was complete") from exc


@router.get(_MANIFEST_PATH, name="get_manifest")
async def get_manifest_route(request: Request, access: NamespaceReader) -> Response:
    key = check_key(request.path_params["key"])
    data = await get_manifest(access.gate.storage, access.namespace, key)
    if data is None:
        raise NotFound("no manifest for this key")
    return Response(data, media_type=_OCTETS)


@router.put(_MANIFEST_PATH, name="put_manifest", status_code=204)
async def put_manifest_route(request: Request, access: NamespaceWriter) -> Response:
    key = check_key(request.path_params["key"])
    data = await _body(request, MAX_MANIFEST_BYTES)
    await put_manifest(access.gate.storage, access.namespace, key, data, access.principal.subject)
    return Response(status_code=204)


@router.post("/v1/ns/{ns:path}/prefetch", name="prefetch")
async def prefetch_route(request: Request, access: NamespaceReader) -> StreamingResponse:
    actions = parse_ids(await _body(request, 32 * MAX_IDS))
    return StreamingResponse(_counted(access, actions, count_prefetch(request, access)), media_type=_OCTETS)


async def _counted(access: Access, actions: list[bytes], usage: PrefetchUsage) -> AsyncIterator[bytes]:
    """The stream, with its entries counted like gets once it ends (or the client leaves)."""
    counts = PrefetchCounts()
    try:
        async for chunk in stream_entries(access.gate.entries, access.namespace, actions, counts):
            yield chunk
    finally:
        metrics, ns = access.gate.metrics, access.namespace
        metrics.hits(ns).inc(counts.sent)
        metrics.misses(ns).inc(counts.missing)
        metrics.corrupt(ns).inc(counts.corrupt)
        metrics.bytes_sent(ns).inc(counts.bytes)
        usage(counts.sent, counts.missing, counts.bytes)
