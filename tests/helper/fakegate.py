"""A scriptable stand-in for the gate, for failure cases a real gate will not produce on demand.

The real gate is used everywhere else (tests/e2e); this one answers what a test tells it to, and
records every request it saw.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    """``answer(seen) -> (status, headers, body)``; a body of None closes the connection early."""

    answer: Callable[[Seen], tuple[int, dict[str, str], bytes | None]]
    seen: list[Seen] = field(default_factory=list)


@contextmanager
def fake_gate(script: Script) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, self.path, dict(self.headers), self.rfile.read(length))
            script.seen.append(seen)
            status, headers, body = script.answer(seen)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if body is None:  # promise more than we send, then hang up: a truncated body
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"partial")
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
