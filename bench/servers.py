"""Every server the bench runs, started on a free loopback port and stopped when the block ends.

One launcher (``serve``) runs any of them: start the process with its output in a log file,
poll a URL until it answers, stop it with SIGTERM (SIGKILL after a few seconds). On top of it:
the gate with a local or gcs backend, fake-gcs-server, the latency proxy, and nginx. A server
that does not come up raises ``BenchFailure`` with the tail of its log.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from .runner import BenchFailure

__all__ = [
    "Emulator",
    "Gate",
    "Server",
    "emulator",
    "free_port",
    "gate",
    "http_json",
    "latency_proxy",
    "nginx",
    "serve",
]

_METRIC = re.compile(r'^(\w+)\{([^}]*)\} ([0-9.e+-]+)$', re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(method: str, url: str, body: object = None, ok: tuple[int, ...] = ()) -> object:
    """One JSON call; an HTTP status in ``ok`` answers None instead of raising."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in ok:
            return None
        raise BenchFailure(f"{method} {url}: {exc.code} {exc.read()[:200]!r}") from exc
    except OSError as exc:
        raise BenchFailure(f"{method} {url}: {exc}") from exc
    return json.loads(text) if text else None


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def serve(
    name: str, argv: list[str], port: int, logs: Path, ready: str, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """Run ``argv`` until the block ends; ready once ``GET ready`` gets any HTTP answer."""
    log = logs / f"{name}-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env or os.environ)
        )
    server = Server(name, port, process, log)
    try:
        _wait_ready(server, ready)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if server.process.poll() is not None:
            tail = server.log.read_text(errors="replace")[-1500:]
            raise BenchFailure(f"{server.name} exited with {server.process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(server.url + path, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError as exc:
            if time.monotonic() > deadline:
                raise BenchFailure(f"{server.name} did not answer on {server.url}{path}") from exc
            time.sleep(0.05)


@dataclass
class Gate:
    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def metrics(self) -> dict[str, float]:
        """Counters from ``/metrics`` keyed ``name{label=value,...}`` (labels sorted), summed."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for name, labels, value in _METRIC.findall(text):
            pairs = ",".join(f"{k}={v}" for k, v in sorted(_LABEL.findall(labels)) if k != "namespace")
            key = f"{name}{{{pairs}}}"
            out[key] = out.get(key, 0.0) + float(value)
        return out


@contextmanager
def gate(root: Path, storage: Mapping[str, object], env: Mapping[str, str] | None = None) -> Iterator[Gate]:
    """``gocachegate serve`` with the embedded default's open access and the given storage section."""
    config = root / "gate.yaml"
    config.write_text(yaml.safe_dump({"server": {"log_level": "warning"}, "storage": dict(storage)}))
    port = free_port()
    binary = str(Path(sys.executable).parent / "gocachegate")
    argv = [binary, "serve", "--config", str(config), "--port", str(port)]
    with serve("gate", argv, port, root, "/healthz", {**os.environ, **(env or {})}) as server:
        yield Gate(server)


@dataclass
class Emulator:
    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def bucket(self, name: str) -> str:
        http_json("POST", f"{self.url}/storage/v1/b?project=bench", {"name": name}, ok=(409,))
        return name

    def drop(self, bucket: str) -> None:
        """Delete ``bucket`` and its objects (the emulator keeps them in memory)."""
        for item in self.objects(bucket):
            name = urllib.parse.quote(str(item["name"]), safe="")
            http_json("DELETE", f"{self.url}/storage/v1/b/{bucket}/o/{name}", ok=(404,))
        http_json("DELETE", f"{self.url}/storage/v1/b/{bucket}", ok=(404,))

    def objects(self, bucket: str) -> list[dict[str, object]]:
        """Every object's listing entry (name, size, metadata) in ``bucket``."""
        items: list[dict[str, object]] = []
        token = ""
        while True:
            query = urllib.parse.urlencode({"pageToken": token, "maxResults": 1000})
            page = http_json("GET", f"{self.url}/storage/v1/b/{bucket}/o?{query}")
            assert isinstance(page, dict)
            items += page.get("items", [])
            token = page.get("nextPageToken", "")
            if not token:
                return items

    def gate_env(self, via: str | None = None) -> dict[str, str]:
        """What a gate (or any GCS client) needs to use this emulator, directly or ``via`` a proxy."""
        return {"STORAGE_EMULATOR_HOST": via or self.url, "GOOGLE_CLOUD_PROJECT": "bench"}


@contextmanager
def emulator(binary: Path, root: Path) -> Iterator[Emulator]:
    """fake-gcs-server keeping its objects in memory."""
    port = free_port()
    argv = [str(binary), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
            "-log-level", "error"]
    with serve("fake-gcs-server", argv, port, root, "/storage/v1/b?project=bench") as server:
        yield Emulator(server)


@contextmanager
def latency_proxy(binary: Path, upstream: str, delay_ms: float, root: Path) -> Iterator[Server]:
    """``bench/latencyproxy`` in its own process, adding ``delay_ms`` to every call to ``upstream``."""
    port = free_port()
    argv = [str(binary), "-listen", f"127.0.0.1:{port}", "-upstream", upstream, "-delay", f"{delay_ms:g}ms"]
    with serve("latency-proxy", argv, port, root, "/storage/v1/b?project=bench") as server:
        yield server


_NGINX_CONF = """\
user {user};
daemon off;
master_process on;
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {docroot};
        client_max_body_size 64m;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"""


@contextmanager
def nginx(binary: Path, docroot: Path, root: Path, workers: int) -> Iterator[Server]:
    """nginx serving ``docroot`` as static files (and taking PUTs into it, WebDAV style)."""
    port = free_port()
    conf = root / "nginx.conf"
    user = pwd.getpwuid(os.getuid()).pw_name  # as the gate runs: workers read and write the docroot
    conf.write_text(_NGINX_CONF.format(user=user, workers=workers, root=root, port=port, docroot=docroot))
    argv = [str(binary), "-c", str(conf), "-p", str(root), "-e", str(root / "nginx-error.log")]
    with serve("nginx", argv, port, root, "/") as server:
        yield server
