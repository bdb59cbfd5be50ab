"""The gcs backend side by side with local, in one run: gate GET throughput, GCS requests per hit
and per new put, and stored versus logical bytes over the cache of a real Go build.

    .venv/bin/python -m bench.gcs_probe [--entries 300] [--requests 3000] [--concurrency 16]
                                        [--go sample|std] [--json FILE]

Both gates run as real processes on loopback, the gcs one on fake-gcs-server (the emulator has no
network latency, so the gcs figures are a ceiling for what the client library and the gate's
thread pool allow, not a forecast for a real bucket). Requests reaching GCS are counted in the
emulator's access log; stored sizes come from its listing, logical sizes from each object's
``size`` metadata (the X-Go-Size that Go put).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.emulator import Emulator, start_emulator
from tests.gatefixture import GateProcess, start_gate
from tests.gohelpers import Machine, write_module

NS = "probe"


def entries(count: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """Outputs shaped like a Go build cache: mostly small, some large; half compressible."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        size = rng.choice([300, 2_000, 8_000, 30_000, 120_000, 600_000] if n % 20 else [2_500_000])
        body = rng.randbytes(size) if n % 2 else (b"TEXT symbol %d\n" % n) * (size // 16 + 1)
        out.append((hashlib.sha256(b"probe action %d" % n).hexdigest(), body[:size]))
    return out


def fill(gate: GateProcess, data: list[tuple[str, bytes]]) -> float:
    started = time.monotonic()
    with httpx.Client(timeout=60) as client:
        for action, body in data:
            answer = client.put(
                f"{gate.url}/v1/ns/{NS}/actions/{action}",
                content=body,
                headers={"X-Go-Output-Id": hashlib.sha256(body).hexdigest(), "X-Go-Size": str(len(body))},
            )
            assert answer.status_code == 201, answer.text
    return time.monotonic() - started


async def hammer(gate: GateProcess, data: list[tuple[str, bytes]], total: int, concurrency: int) -> dict[str, float]:
    """``total`` GETs by ``concurrency`` clients that accept zstd, as the helper does."""
    rng = random.Random(11)
    order = [rng.randrange(len(data)) for _ in range(total)]
    latencies: list[float] = []
    received = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal received
        while order:
            action, body = data[order.pop()]
            started = time.perf_counter()
            answer = await client.get(f"{gate.url}/v1/ns/{NS}/actions/{action}")
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200 and len(answer.content) == len(body)
            received += len(body)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers={"Accept-Encoding": "zstd"}, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "gets_per_s": total / seconds,
        "mib_per_s": received / seconds / (1 << 20),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def go_build(gate: GateProcess, root: Path, target: str) -> dict[str, int]:
    machine = Machine(root / "machine", gate.url, GOCACHEGATE_NAMESPACE="gobuild")
    if target == "std":
        run = machine.go("build", "std", cwd=root, timeout=1800)
    else:
        module = write_module(root / "src", packages=8)
        run = machine.go("build", "-o", str(root / "app"), ".", cwd=module)
    return run.check().stats


@contextmanager
def gates(root: Path) -> Iterator[tuple[GateProcess, GateProcess, Emulator]]:
    with ExitStack() as stack:
        emulator = stack.enter_context(start_emulator())
        gcs = stack.enter_context(
            start_gate(
                root / "gate-gcs", {"storage": {"backend": "gcs", "bucket": emulator.bucket}}, env=emulator.env()
            )
        )
        local = stack.enter_context(start_gate(root / "gate-local"))
        yield local, gcs, emulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=300)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--go", choices=["sample", "std", "none"], default="sample")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    data = entries(args.entries)
    results: dict[str, Any] = {"entries": len(data), "logical_bytes": sum(len(b) for _, b in data)}
    with tempfile.TemporaryDirectory(prefix="gcs-probe-") as scratch, gates(Path(scratch)) as (local, gcs, emulator):
        seen = len(emulator.requests())
        for name, gate in (("local", local), ("gcs", gcs)):
            results[f"{name}_fill_s"] = fill(gate, data)
        put_requests = [r for r in emulator.requests()[seen:] if "readiness-probe" not in r.path]
        results["gcs_requests_per_put"] = {
            kind: sum(r.kind == kind for r in put_requests) / len(data)
            for kind in sorted({r.kind for r in put_requests})
        }

        for name, gate in (("local", local), ("gcs", gcs)):
            seen = len(emulator.requests())
            results[name] = asyncio.run(hammer(gate, data, args.requests, args.concurrency))
            if name == "gcs":
                hit_requests = [r for r in emulator.requests()[seen:] if "readiness-probe" not in r.path]
                results["gcs_requests_per_hit"] = {
                    kind: sum(r.kind == kind for r in hit_requests) / args.requests
                    for kind in sorted({r.kind for r in hit_requests})
                }
        results["gcs_vs_local_throughput"] = results["gcs"]["gets_per_s"] / results["local"]["gets_per_s"]

        if args.go != "none":
            stats = go_build(gcs, Path(scratch) / "go", args.go)
            objects = emulator.objects("ac/gobuild/")
            stored = sum(int(o["size"]) for o in objects)
            logical = sum(int(o["metadata"]["size"]) for o in objects)
            results["go_build"] = {
                "target": args.go,
                "objects": len(objects),
                "puts": stats["puts"],
                "stored_bytes": stored,
                "logical_bytes": logical,
                "stored_over_logical": stored / logical,
            }

    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    main()
