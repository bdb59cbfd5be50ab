"""Scenario 5: the gate's request rate and latency against nginx serving the same bytes.

Entries of 4 KiB and 256 KiB (random, so neither side can compress them) are put into a gate on
the local backend, and the same bytes written as static files under the same URL paths for nginx;
one wrk Lua script then drives either server. The load generator is wrk in its own process at 1,
8 and 32 connections (at most 2 threads: the machine has 2 cores, shared by client and server).
Both servers run one process (the gate is one uvicorn process; nginx gets ``worker_processes 1``).

GET sends ``Accept-Encoding: zstd`` as the helper does. PUT writes a new entry per request
(unique action ids) to the gate, and a new file per request to nginx (WebDAV ``PUT``).

Targets: at 32 clients the gate serves at least 40% of nginx's GET rate, with p99 under 50 ms.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .backends import Backends
from .runner import BenchFailure, Context, Row, Series, Target, attempt, compare
from .servers import nginx
from .tools import Tools

__all__ = ["throughput"]

SIZES = {"4 KiB": 4 << 10, "256 KiB": 256 << 10}
CLIENTS = (1, 8, 32)
ENTRIES = 64
RATE_TARGET = Target(">=", 0.40)
P99_TARGET = Target("<=", 50.0)
_NAMESPACE = "bench"

#: The wrk script for one run against a server URL, repetition ``rep``.
ScriptFor = Callable[[str, int], Path]

_GET_LUA = """\
local paths = {{ {paths} }}
local n = 0
wrk.headers["Accept-Encoding"] = "zstd"
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end
"""

_PUT_LUA = """\
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
init = function(args)
  local f = assert(io.open("{body}", "rb"))
  wrk.body = f:read("*a")
  f:close()
end
wrk.method = "PUT"
wrk.headers["X-Go-Output-Id"] = "{output_id}"
wrk.headers["X-Go-Size"] = "{size}"
wrk.headers["Content-Type"] = "application/octet-stream"
request = function()
  n = n + 1
  return wrk.format(nil, "{prefix}" .. string.format("{run}%08x%08x", tid, n))
end
"""


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if match is None:
        raise BenchFailure(f"wrk printed a latency I cannot read: {text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(binary: Path, url: str, script: Path, clients: int, seconds: float) -> Load:
    """One wrk run; fails if any request got a non-2xx answer or a socket error."""
    argv = [str(binary), "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{seconds:g}s", "--latency",
            "-s", str(script), url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = proc.stdout
    if proc.returncode != 0:
        raise BenchFailure(f"wrk failed: {(proc.stderr or out).strip()[-300:]}")
    if bad := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise BenchFailure(f"{bad.group(1)} non-2xx answers from {url}")
    if errors := re.search(r"Socket errors: (.*)", out):
        raise BenchFailure(f"socket errors against {url}: {errors.group(1)}")
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if rps is None or p50 is None or p99 is None:
        raise BenchFailure(f"wrk printed no rate: {out[-300:]}")
    return Load(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)))


def _entry_path(action: str) -> str:
    return f"/v1/ns/{_NAMESPACE}/actions/{action}"


def _put(url: str, body: bytes, action: str) -> None:
    request = urllib.request.Request(url + _entry_path(action), data=body, method="PUT", headers={
        "X-Go-Output-Id": hashlib.sha256(body).hexdigest(), "X-Go-Size": str(len(body)),
        "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status not in (200, 201):
            raise BenchFailure(f"filling the gate: PUT answered {response.status}")


def _get_script(root: Path, gate_url: str, docroot: Path, size: int) -> Path:
    """Fill the gate and nginx's docroot with ``ENTRIES`` entries of ``size``; the GET script."""
    paths = []
    for i in range(ENTRIES):
        body = os.urandom(size)
        action = hashlib.sha256(f"bench-{size}-{i}".encode()).hexdigest()
        _put(gate_url, body, action)
        static = docroot / _entry_path(action).lstrip("/")
        static.parent.mkdir(parents=True, exist_ok=True)
        static.write_bytes(body)
        paths.append(f'"{_entry_path(action)}"')
    script = root / f"get-{size}.lua"
    script.write_text(_GET_LUA.format(paths=", ".join(paths)))
    return script


def _put_script(root: Path, size: int, prefix: str, run: str) -> Path:
    body = os.urandom(size)
    body_file = root / f"put-{size}.bin"
    body_file.write_bytes(body)
    script = root / f"put-{size}-{prefix.strip('/').replace('/', '-')}-{run}.lua"
    script.write_text(_PUT_LUA.format(body=body_file, output_id=hashlib.sha256(body).hexdigest(), size=size,
                                      prefix=prefix, run=run))
    return script


@dataclass(frozen=True)
class _Setup:
    wrk: Path
    gate_url: str
    nginx_url: str
    seconds: float
    written: tuple[Path, ...]  # where PUT runs land (nginx's put/ directory, the gate's store), emptied after each

    def clean(self) -> None:
        for parent in self.written:
            for path in parent.parent.glob(parent.name):
                shutil.rmtree(path, ignore_errors=True)


def throughput(ctx: Context, tools: Tools) -> list[Row]:
    wrk_bin = tools.get("wrk")
    nginx_bin = tools.get("nginx")
    clients = (32,) if ctx.quick else CLIENTS
    root = ctx.scratch("throughput")
    docroot = ctx.scratch("docroot")
    rows: list[Row] = []
    with Backends(ctx, tools) as backends:
        store = backends.store("local")
        with backends.gate(store) as gate, nginx(nginx_bin, docroot, ctx.scratch("nginx"), workers=1) as web:
            setup = _Setup(wrk_bin, gate.url, web.url, 2.0 if ctx.quick else 5.0,
                           (docroot / "put", Path(str(store.storage["path"])) / "ac" / "put*"))
            for size_label, size in SIZES.items():
                get_script = _get_script(root, gate.url, docroot, size)
                for server in (gate.url, web.url):  # warm both before measuring
                    wrk(wrk_bin, server, get_script, 8, 1)
                for n in clients:
                    rows += _rows(ctx, setup, f"GET {size_label}, {n} clients", n, _same(get_script), n == 32)
                for n in clients:
                    rows += _rows(ctx, setup, f"PUT {size_label}, {n} clients", n,
                                  _new_entries(root, size, n, gate.url), False)
    return rows


def _same(script: Path) -> ScriptFor:
    return lambda url, rep: script


def _new_entries(root: Path, size: int, clients: int, gate_url: str) -> ScriptFor:
    """PUT scripts writing to paths no earlier run used: a namespace (gate) or directory (nginx) each."""

    def script(url: str, rep: int) -> Path:
        where = f"/v1/ns/put{size}x{clients}r{rep}/actions/" if url == gate_url else f"/put/{size}/{clients}/{rep}/"
        return _put_script(root, size, where, f"{rep:048x}")

    return script


def _rows(ctx: Context, setup: _Setup, name: str, clients: int, script_for: ScriptFor, targets: bool) -> list[Row]:
    rate_target = RATE_TARGET if targets else None
    p99_target = P99_TARGET if targets else None

    def measure() -> tuple[list[Load], list[Load]]:
        gate_runs: list[Load] = []
        nginx_runs: list[Load] = []
        for rep in range(ctx.reps):
            for url, runs in ((setup.gate_url, gate_runs), (setup.nginx_url, nginx_runs)):
                runs.append(wrk(setup.wrk, url, script_for(url, rep), clients, setup.seconds))
            setup.clean()
        return gate_runs, nginx_runs

    def rate_row() -> Row:
        gate_runs, nginx_runs = ctx.once(f"load:{name}", measure)
        p50 = sorted(r.p50_ms for r in gate_runs)[len(gate_runs) // 2]
        return compare("throughput", f"{name}: gate req/s", Series(tuple(r.rps for r in gate_runs), "req/s"),
                       "nginx", Series(tuple(r.rps for r in nginx_runs), "req/s"), "share", rate_target,
                       gate_p50_ms=round(p50, 2))

    def p99_row() -> Row:
        gate_runs, nginx_runs = ctx.once(f"load:{name}", measure)
        return compare("throughput", f"{name}: gate p99", Series(tuple(r.p99_ms for r in gate_runs), "ms"),
                       "nginx p99", Series(tuple(r.p99_ms for r in nginx_runs), "ms"), "value", p99_target)

    return [attempt("throughput", f"{name}: gate req/s", rate_target, rate_row),
            attempt("throughput", f"{name}: gate p99", p99_target, p99_row)]
