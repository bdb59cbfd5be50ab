"""The cache API: ``GET`` and ``PUT /v1/ns/{ns}/actions/{action}``.

Thin on purpose: parse headers, call ``EntryService``, turn its result into a response and count
it. GET, the hit path, is not a FastAPI route: ``server.app.GateApp`` calls ``get_entry`` before
FastAPI's middleware and routing, which cost more than everything the gate itself does for a small
hit (see there), and ``get_entry`` calls ``read_access`` itself instead of declaring it.

The path parameters take any text (``:path``) so that an encoded slash or a dot segment reaches
the name checks and gets a 400 with a reason, instead of a bare 404 from the router.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from ..deps import NamespaceWriter, read_access
from ..entries import CorruptEntry, Hit, Upload
from ..errors import BadRequest, GateError, NotFound
from ..names import check_hex_id
from ..usage.hooks import count_get, count_put

__all__ = ["HIT_PATH", "get_entry", "router"]

router = APIRouter()

_PATH = "/v1/ns/{ns:path}/actions/{action:path}"
_OCTETS = "application/octet-stream"
_NO_ZSTD_Q = re.compile(r"\s*q\s*=\s*0(?:\.0{0,3})?\s*")
_MAX_DIGITS = 18


def _accepts_zstd(value: str | None) -> bool:
    if not value or "zstd" not in value.lower():
        return False
    for part in value.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() == "zstd":
            return _NO_ZSTD_Q.fullmatch(params) is None
    return False


def _int_header(headers: Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS):
        raise BadRequest(f"bad {name}: want a non-negative integer")
    return int(value)


def _upload(headers: Headers) -> Upload:
    output_id = headers.get("x-go-output-id")
    if output_id is None:
        raise BadRequest("missing X-Go-Output-Id")
    check_hex_id(output_id, "X-Go-Output-Id")
    size = _int_header(headers, "X-Go-Size")
    if size is None:
        raise BadRequest("missing X-Go-Size")
    encoding = (headers.get("content-encoding") or "identity").strip().lower()
    if encoding not in ("identity", "zstd"):
        raise BadRequest(f"unsupported Content-Encoding {encoding[:40]!r}: send identity or zstd")
    return Upload(
        output_id=output_id,
        size=size,
        encoding=encoding,
        content_length=_int_header(headers, "Content-Length"),
        compute_ms=_int_header(headers, "X-Go-Compute-Ms"),
    )


def _hit_headers(hit: Hit) -> dict[str, str]:
    header = hit.header
    values = {
        "X-Go-Output-Id": header.output_id,
        "X-Go-Size": str(header.size),
        "X-Go-Put-Time": header.put_time,
        "Vary": "Accept-Encoding",
    }
    if header.compute_ms is not None:
        values["X-Go-Compute-Ms"] = str(header.compute_ms)
    if hit.content_encoding is not None:
        values["Content-Encoding"] = hit.content_encoding
    return values


#: The hit path's URL as FastAPI would match ``/v1/ns/{ns:path}/actions/{action:path}``.
HIT_PATH = re.compile(r"/v1/ns/(?P<ns>.*)/actions/(?P<action>.*)")


async def get_entry(request: Request) -> Response:
    """``GET /v1/ns/{ns}/actions/{action}``: the entry's bytes, or 404 (raises the gate's errors).

    Served by ``server.app.GateApp`` before FastAPI's middleware and routing (see there); the
    request's ``path_params`` come from ``HIT_PATH``.
    """
    access = await read_access(request)
    action = check_hex_id(request.path_params["action"])
    ns, gate = access.namespace, access.gate
    metrics = gate.metrics
    try:
        hit = await gate.entries.get(ns, action, accept_zstd=_accepts_zstd(request.headers.get("accept-encoding")))
    except CorruptEntry:
        metrics.corrupt(ns).inc()
        metrics.misses(ns).inc()
        count_get(request, access, None)
        raise
    count_get(request, access, hit)
    if hit is None:
        metrics.misses(ns).inc()
        raise NotFound("no such entry")
    metrics.hits(ns).inc()
    metrics.bytes_sent(ns).inc(hit.length)
    headers = _hit_headers(hit)
    if hit.body is not None:
        return Response(hit.body, headers=headers, media_type=_OCTETS)
    assert hit.chunks is not None
    headers["Content-Length"] = str(hit.length)
    return StreamingResponse(hit.chunks, headers=headers, media_type=_OCTETS)


def _header(name: str, schema: Mapping[str, object], required: bool = False) -> dict[str, object]:
    return {"name": name, "in": "header", "required": required, "schema": schema}


_HEX = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
# Read from path_params by the handlers (GateApp sets them for the hit path), so declared here.
_NAMES = [{"name": "ns", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}},
          {"name": "action", "in": "path", "required": True, "schema": _HEX}]
_ERROR = {"content": {"application/json": {"schema": {"type": "object", "required": ["error"],
                                                      "properties": {"error": {"type": "string"}}}}}}

# The hit path in the OpenAPI schema (clients and schema-driven tests see it); GateApp still
# answers it before FastAPI's routing, so this route runs only where the router is mounted alone.
router.add_api_route(
    _PATH, get_entry, methods=["GET"], name="get_entry", response_class=Response,
    openapi_extra={
        "parameters": [*_NAMES, _header("Accept-Encoding", {"type": "string"})],
        "responses": {"200": {"description": "the output bytes",
                              "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}}},
                      "404": {"description": "miss", **_ERROR}},
    },
)

_PUT_SCHEMA = {
    "parameters": [
        *_NAMES,
        _header("X-Go-Output-Id", _HEX, required=True),
        _header("X-Go-Size", {"type": "string", "pattern": "^[0-9]{1,18}$"}, required=True),
        _header("X-Go-Compute-Ms", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
        _header("Content-Encoding", {"type": "string", "enum": ["identity", "zstd"]}),
    ],
    "requestBody": {"required": True, "content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}}},
    "responses": {"200": {"description": "already present, nothing written"},
                  "400": {"description": "bad name, header or body (digest, size)", **_ERROR},
                  "403": {"description": "not a writer of this namespace", **_ERROR},
                  "413": {"description": "over limits.max_entry_bytes", **_ERROR}},
}


@router.put(_PATH, name="put_entry", status_code=201, openapi_extra=_PUT_SCHEMA)
async def put_entry(request: Request, access: NamespaceWriter) -> Response:
    action = check_hex_id(request.path_params["action"])
    ns, gate, principal = access.namespace, access.gate, access.principal
    metrics = gate.metrics
    try:
        upload = _upload(request.headers)
        result = await gate.entries.put(ns, action, upload, request.stream(), principal.subject)
    except ClientDisconnect as exc:
        metrics.puts(ns, "rejected").inc()
        count_put(request, access, None)
        raise BadRequest("client disconnected before the body was complete") from exc
    except GateError:
        metrics.puts(ns, "rejected").inc()
        count_put(request, access, None)
        raise
    count_put(request, access, result)
    metrics.bytes_received(ns).inc(result.received)
    if not result.created:
        metrics.puts(ns, "present").inc()
        return JSONResponse({"status": "present"}, status_code=200)
    metrics.puts(ns, "new").inc()
    return JSONResponse(
        {"status": "stored", "stored_size": result.stored_size, "encoding": result.encoding}, status_code=201
    )
