"""A real GCS emulator for tests: fake-gcs-server on a free loopback port, one bucket, nothing shared.

``scripts/tools/fake-gcs-server.sh`` installs the binary into ``.tools/bin``. Without it the tests
that need it skip, unless ``CI`` is set: there a missing emulator is a failure, not a skip.

Every request that reaches the emulator shows in its access log, so ``Emulator.requests()`` counts
storage requests at the HTTP level, as GCS would bill them, with no hook in the code under test.

Use the ``gcs_emulator`` fixture (re-export it from a conftest), or ``start_emulator()`` directly::

    with start_emulator() as emu:
        env = {"STORAGE_EMULATOR_HOST": emu.url}   # plus storage: {backend: gcs, bucket: emu.bucket}
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Emulator", "EmulatorRequest", "emulator_binary", "gcs_emulator", "start_emulator"]

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "gocachegate-test"
_OWN_TAG = "fixture=tests.emulator"  # marks the requests this module makes itself
_ACCESS_LOG = re.compile(r'\\"([A-Z]+) (\S+) HTTP/[0-9.]+\\" (\d{3})')


def emulator_binary() -> Path:
    """The fake-gcs-server binary; skips the test if it is missing, fails it under CI."""
    found = ROOT / ".tools" / "bin" / "fake-gcs-server"
    if not found.exists() and (on_path := shutil.which("fake-gcs-server")):
        found = Path(on_path)
    if found.exists():
        return found
    reason = "fake-gcs-server is not installed: run scripts/tools/fake-gcs-server.sh"
    if os.environ.get("CI"):
        pytest.fail(f"CI needs the GCS emulator: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class EmulatorRequest:
    method: str
    path: str  # with its query string
    status: int

    @property
    def kind(self) -> str:
        """What GCS bills it as: ``media`` (read), ``upload`` (write), ``list``, ``get``, ``patch``..."""
        path = urllib.parse.urlsplit(self.path).path
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if path.startswith("/upload/"):
            return "upload"
        if path.startswith("/download/") or query.get("alt") == ["media"]:
            return "media"
        if self.method == "GET" and path.endswith("/o"):
            return "list"
        return self.method.lower()


class Emulator:
    """A running fake-gcs-server with one empty bucket."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path, bucket: str) -> None:
        self.process = process
        self.port = port
        self.bucket = bucket
        self._log = log
        self._syncs = 0

    @property
    def url(self) -> str:
        """The value for ``STORAGE_EMULATOR_HOST``."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for a process that should use this emulator with anonymous credentials."""
        env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
        env["STORAGE_EMULATOR_HOST"] = self.url
        return env

    def requests(self) -> list[EmulatorRequest]:
        """Every request the emulator has answered so far, in order, this class's own included.

        Flushes first: a marker request goes out and the log is read once it shows, so that
        requests answered before the call are all in.
        """
        self._syncs += 1
        marker = f"/storage/v1/b/{self.bucket}/o/__sync__{self._syncs}"
        self._call("GET", marker, ok=(404,))
        deadline = time.monotonic() + 5
        while True:
            seen = [EmulatorRequest(m, p, int(s)) for m, p, s in _ACCESS_LOG.findall(self._log.read_text())]
            if any(r.path.startswith(marker + "?") for r in seen) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return [r for r in seen if _OWN_TAG not in r.path]

    def objects(self, prefix: str = "") -> list[dict[str, Any]]:
        """The bucket's object resources (JSON API), like every call of this class missing from
        ``requests()``."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token})
            page = self._call("GET", f"/storage/v1/b/{self.bucket}/o?{query}")
            items += page.get("items", [])
            token = page.get("nextPageToken", "")
            if not token:
                return items

    def object_names(self, prefix: str = "") -> list[str]:
        return [item["name"] for item in self.objects(prefix)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _call(self, method: str, path: str, body: object = None, ok: tuple[int, ...] = ()) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        url = f"{self.url}{path}{'&' if '?' in path else '?'}{_OWN_TAG}"
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return {}
            raise
        return json.loads(text) if text else {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def start_emulator(bucket: str = BUCKET, *, data_dir: Path | None = None) -> Iterator[Emulator]:
    """Start fake-gcs-server, create ``bucket``, stop it on exit.

    In memory unless ``data_dir`` is given, in which case the objects live there (a restart with
    the same directory finds them again).
    """
    binary = emulator_binary()
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as scratch:
        log = Path(scratch) / "emulator.log"
        backend = ["-backend", "memory"]
        if data_dir is not None:
            backend = ["-backend", "filesystem", "-filesystem-root", str(data_dir)]
        port = _free_port()
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(binary), *backend, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=scratch,
            )
        emulator = Emulator(process, port, log, bucket)
        try:
            _wait_ready(emulator)
            emulator._call("POST", "/storage/v1/b?project=test", {"name": bucket}, ok=(409,))
            yield emulator
        finally:
            emulator.stop()


def _wait_ready(emulator: Emulator) -> None:
    deadline = time.monotonic() + 20
    while True:
        if emulator.process.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited early:\n{emulator._log.read_text()[-2000:]}")
        try:
            emulator._call("GET", "/storage/v1/b?project=test")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def gcs_emulator() -> Iterator[Emulator]:
    """A fresh emulator for one test."""
    with start_emulator() as emulator:
        yield emulator
