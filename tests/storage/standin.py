"""A scripted HTTP server on loopback that stands in for GCS where the emulator cannot misbehave
on demand: 5xx, 429, silence, corrupt or truncated bodies, and recording what clients send."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Reply", "Seen", "StandIn", "stand_in"]


@dataclass
class Reply:
    status: int = 404
    body: bytes = b""
    headers: dict[str, str] | None = None
    delay: float = 0.0  # seconds before answering
    cut_after: int | None = None  # close the connection after this many body bytes


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    client_port: int


class StandIn:
    def __init__(self, answer: Callable[[Seen], Reply]) -> None:
        self.answer = answer
        self.seen: list[Seen] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as GCS: connection reuse is observable

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen = Seen(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.client_address[1]
                )
                with stand_in._lock:
                    stand_in.seen.append(seen)
                    stand_in.active += 1
                    stand_in.max_active = max(stand_in.max_active, stand_in.active)
                try:
                    reply = stand_in.answer(seen)
                    if reply.delay:
                        threading.Event().wait(reply.delay)
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **(reply.headers or {})}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if reply.cut_after is None:
                        self.wfile.write(reply.body)
                    else:
                        self.wfile.write(reply.body[: reply.cut_after])
                        self.wfile.flush()
                        self.close_connection = True
                finally:
                    with stand_in._lock:
                        stand_in.active -= 1

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        return Handler


@contextmanager
def stand_in(answer: Callable[[Seen], Reply]) -> Iterator[StandIn]:
    server = StandIn(answer)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
