"""A reverse proxy that adds a fixed delay to every request: a far-away bucket, on loopback.

The gate reaches fake-gcs-server through it (``STORAGE_EMULATOR_HOST`` names the proxy), so every
storage call (one media GET per hit, one upload per new entry) waits as long as a call to a GCS
bucket in another region would, with nothing changed in the gate. The Host header is passed on
unchanged, so URLs the emulator hands out (resumable upload sessions) lead back through the proxy.

Run as ``python -m bench.latency --port N --upstream URL --delay-ms 30``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import httpx
import uvicorn

__all__ = ["LatencyProxy", "main"]

_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"})

Scope = dict[str, Any]
Message = dict[str, Any]


class LatencyProxy:
    """An ASGI app forwarding every request to ``upstream`` after ``delay`` seconds."""

    def __init__(self, upstream: str, delay: float) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self._client is None:
            limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
            self._client = httpx.AsyncClient(limits=limits, timeout=60.0)
        await asyncio.sleep(self.delay)
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        target = self.upstream + scope["raw_path"].decode()
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP_BY_HOP]
        request = self._client.build_request(scope["method"], target, headers=headers, content=bytes(body))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await _answer(send, 502, str(exc).encode())
            return
        try:
            await send({
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP],
            })
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def _answer(send: Any, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.latency", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    app = LatencyProxy(args.upstream, args.delay_ms / 1000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
