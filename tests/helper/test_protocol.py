"""The helper against the protocol as go speaks it, without go and without a gate."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cacheprog.cache import Cache
from cacheprog.config import Config
from cacheprog.l1 import L1
from cacheprog.loop import serve
from cacheprog.stats import Stats
from tests.gohelpers import helper_binary
from tests.helper.driver import Helper, action
from tests.reliability.support import stalled_listener


def test_handshake_comes_first_and_fast(tmp_path: Path) -> None:
    start = time.monotonic()
    h = Helper(tmp_path / "l1")
    elapsed = time.monotonic() - start
    assert h.handshake == {"ID": 0, "KnownCommands": ["get", "put", "close"]}
    assert elapsed < 2.0
    h.close()


def test_put_then_get_round_trip(tmp_path: Path) -> None:
    h = Helper(tmp_path / "l1")
    body = b"compiled output\n" * 100
    h.send("put", action(1), body)
    put = h.read()
    assert Path(put["DiskPath"]).read_bytes() == body
    h.send("get", action(1))
    got = h.read()
    assert got["DiskPath"] == put["DiskPath"]
    assert base64.b64decode(got["OutputID"]) == hashlib.sha256(body).digest()
    assert got["Size"] == len(body)
    assert "Time" in got
    h.send("get", action(2))
    assert h.read() == {"ID": 3, "Miss": True}
    h.close()


def test_zero_size_put(tmp_path: Path) -> None:
    h = Helper(tmp_path / "l1")
    h.send("put", action(1), b"")
    put = h.read()
    assert Path(put["DiskPath"]).read_bytes() == b""
    h.send("get", action(1))
    got = h.read()
    assert got["DiskPath"] == put["DiskPath"] and "Miss" not in got and got.get("Size", 0) == 0
    h.close()


def test_malformed_requests_get_errors_not_a_crash(tmp_path: Path) -> None:
    h = Helper(tmp_path / "l1")
    h.send("frobnicate", action(1))
    assert "unknown command" in h.read()["Err"]
    # A put whose body is not base64: answered with an error, and L1 is untouched.
    h.send_raw(json.dumps({"ID": 10, "Command": "put", "ActionID": base64.b64encode(action(3)).decode(),
                           "OutputID": base64.b64encode(b"x" * 32).decode(), "BodySize": 5}).encode()
               + b'\n\n"!!!not base64!!!"\n')
    assert h.read()["ID"] == 10
    # A body that does not have BodySize bytes.
    h.send_raw(json.dumps({"ID": 11, "Command": "put", "ActionID": base64.b64encode(action(4)).decode(),
                           "OutputID": base64.b64encode(b"x" * 32).decode(), "BodySize": 50}).encode()
               + b'\n\n"' + base64.b64encode(b"short") + b'"\n')
    assert "BodySize" in h.read()["Err"]
    # An ActionID of the wrong length, and a line that is not JSON at all.
    h.send_raw(b'{"ID": 12, "Command": "get", "ActionID": "AAAA"}\n\n')
    assert "ActionID" in h.read()["Err"]
    h.send_raw(b"this is not json\n\n")
    h.send("get", action(3))
    assert h.read()["Miss"] is True
    h.send("get", action(4))
    assert h.read()["Miss"] is True
    h.close()
    assert h.proc.returncode == 0
    assert not list((tmp_path / "l1").glob("*/*-a"))


def test_answers_out_of_order_while_remote_gets_wait(tmp_path: Path) -> None:
    """A get stuck on a slow gate must not hold up local answers behind it."""
    with stalled_listener() as url:
        h = Helper(tmp_path / "l1", GOCACHEGATE_URL=url, GOCACHEGATE_TIMEOUT="1.5", GOCACHEGATE_READ_ONLY="1")
        slow = h.send("get", action(1))  # goes to the stalled gate
        local = h.send("put", action(2), b"local body")
        first = h.read()
        assert first["ID"] == local and first["DiskPath"]
        second = h.read()
        assert second == {"ID": slow, "Miss": True}
        h.close()


def test_version_and_help_without_go() -> None:
    out = subprocess.run([helper_binary(), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("gocacheprog ")
    out = subprocess.run([helper_binary(), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "GOCACHEGATE" in out.stdout


def test_bad_setting_falls_back_to_local_cache(tmp_path: Path) -> None:
    h = Helper(tmp_path / "l1", GOCACHEGATE_URL="ftp://nope", GOCACHEGATE_NAMESPACE="bad/ns")
    h.send("put", action(1), b"body")
    assert h.read()["DiskPath"]
    h.close()
    assert "local cache only" in h.stderr()


@contextlib.contextmanager
def _closed_in_process(tmp_path: Path) -> Iterator[int]:
    """``serve`` run in this process on a close request; yields the read end of its stdout pipe,
    non-blocking, with serve returned and the answer in it."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    os.write(in_write, b'{"ID":1,"Command":"close"}\n\n')
    os.close(in_write)
    l1 = L1(str(tmp_path / "l1"), 1 << 30)
    try:
        with os.fdopen(in_read, "rb") as stdin:
            serve(Cache(Config(url=None, namespace="default", dir=l1.root), l1, None, Stats()), stdin, out_write)
        os.set_blocking(out_read, False)  # a pipe still open for writing raises BlockingIOError here
        yield out_read
    finally:
        os.close(out_read)
        os.close(out_write)  # /dev/null by then, unless none could be opened


def test_close_gives_go_its_end_of_stdout_before_the_helper_exits(tmp_path: Path) -> None:
    """go waits for the helper's stdout to close, not for its exit: once close is answered, the
    pipe must be at its end while this process (the helper, here) still runs."""
    with _closed_in_process(tmp_path) as out:
        assert json.loads(os.read(out, 4096)) == {"ID": 1}
        assert os.read(out, 1) == b""


def test_close_without_dev_null_still_answers_and_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No /dev/null to put in stdout's place (an odd sandbox): close is answered all the same, and
    the pipe stays open until the process exits, as it did before."""
    monkeypatch.setattr(os, "devnull", str(tmp_path / "no such dir" / "null"))
    with _closed_in_process(tmp_path) as out:
        assert json.loads(os.read(out, 4096)) == {"ID": 1}
        with pytest.raises(BlockingIOError):
            os.read(out, 1)  # still open: it ends when the process exits
