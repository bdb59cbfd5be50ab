"""A gate that stalls halfway through a body: the get is a miss after one ``GOCACHEGATE_TIMEOUT``
and the circuit opens at once, so the next get does not wait again (a stall before the answer is
tests/reliability/test_gate_faults.py, with the real go command)."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helper.driver import Helper, action
from tests.reliability.support import stalled_listener


@contextmanager
def gate_that_stalls_mid_body() -> Iterator[tuple[str, list[bytes]]]:
    """Answers every request with the headers of a 1000-byte hit and 100 bytes of it, then holds."""
    requests: list[bytes] = []
    head = (f"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Go-Size: 1000\r\n"
            f"X-Go-Output-Id: {hashlib.sha256(b'x').hexdigest()}\r\n\r\n").encode()

    def greet(conn: socket.socket) -> None:
        requests.append(conn.recv(65536).split(b"\r\n", 1)[0])
        conn.sendall(head + b"x" * 100)

    with stalled_listener(greet) as url:
        yield url, requests


def test_a_body_that_stalls_opens_the_circuit_at_once(tmp_path: Path) -> None:
    with gate_that_stalls_mid_body() as (url, requests):
        h = Helper(tmp_path / "l1", GOCACHEGATE_URL=url, GOCACHEGATE_TIMEOUT="1", GOCACHEGATE_PREFETCH="0",
                   GOCACHEGATE_STATS_FILE=str(tmp_path / "stats.json"))
        started = time.monotonic()
        h.send("get", action(1))
        assert h.read()["Miss"] is True
        first = time.monotonic() - started
        started = time.monotonic()
        h.send("get", action(2))
        assert h.read()["Miss"] is True
        second = time.monotonic() - started
        h.close()
    assert 0.9 < first < 5, first
    assert second < 0.5, f"the second get waited {second:.1f} s on a gate that had stalled"
    assert len(requests) == 1, requests  # the second get, the session report: none went out
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["remote_errors"] == 1 and stats["misses"] == 2 and stats["corrupt"] == 0, stats
    assert h.stderr().count("gate unavailable") == 1
