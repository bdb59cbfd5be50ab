"""The bench's latency proxy, built with the real go command: every call waits the delay, and path,
query, Host, method and body reach the upstream unchanged (the gate's GCS calls depend on each)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.servers import latency_proxy
from bench.tools import Tools

pytestmark = pytest.mark.go


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with what it received, as JSON."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps({"method": self.command, "path": self.path, "host": self.headers["Host"],
                           "body": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_every_call_waits_the_delay_and_arrives_unchanged(upstream: str, tmp_path: Path) -> None:
    with latency_proxy(Tools().get("latencyproxy"), upstream, 40, tmp_path) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        for _ in range(3):  # on one kept-alive connection, as the gate's client sends them
            start = time.monotonic()
            conn.request("POST", "/upload/storage/v1/b/bkt/o?uploadType=media&name=ac%2Fns%2Fab",
                         body=b"entry", headers={"Host": "storage.example:4443"})
            response = conn.getresponse()
            seen = json.loads(response.read())
            assert time.monotonic() - start >= 0.040
            assert response.status == 200
            assert seen == {"method": "POST", "path": "/upload/storage/v1/b/bkt/o?uploadType=media&name=ac%2Fns%2Fab",
                            "host": "storage.example:4443", "body": "entry"}
