"""``bench/run [--quick] [--json FILE] [--only NAME[,NAME...]]``: run the scenarios, print the table.

The scenarios run in the order below, sharing one ``Context`` so that references (native cold
times, native output) are measured once. The table goes to stdout as each scenario finishes and
whole at the end; the JSON document goes to ``--json`` (default ``bench/out/results.json``).
Exit status: 0 when every row was measured, 1 when any row failed (a missed target is a result,
not a failure); 143 when stopped by SIGTERM, which, like Ctrl-C, first stops the servers the run
started and removes its scratch area.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from . import builds, cost, peer, prefetch, throughput, trivial
from .report import machine, markdown, write_json
from .runner import BenchFailure, Context, Row
from .tools import ROOT, Tools

__all__ = ["SCENARIOS", "main"]

Scenario = Callable[[Context, Tools], list[Row]]

SCENARIOS: dict[str, Scenario] = {
    "cold": builds.cold,
    "remote-warm": builds.remote_warm,
    "remote-warm-latency": builds.remote_warm_latency,
    "l1-warm": trivial.l1_warm,
    "throughput": throughput.throughput,
    "peer": peer.peer,
    "cost": cost.cost,
    "prefetch": prefetch.prefetch,
}

OUT = ROOT / "bench" / "out"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench/run", description="gocachegate against Go's native cache, "
                                     "nginx and a peer helper, as ratios measured in one run.")
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads (the module instead of std), fewer repetitions")
    parser.add_argument("--json", type=Path, default=OUT / "results.json", help="where to write the JSON results")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    return parser


def _commit() -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.1f}" for v in avg)


def _stopped(signum: int, frame: object) -> None:
    """SIGTERM ends a run as Ctrl-C does, through every ``finally``: killed outright, a run left its
    gates and emulator running and its scratch area behind (hundreds of MB, some on /dev/shm, in
    memory). A second SIGTERM kills at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stopped)
    names = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        _parser().error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    started = time.monotonic()
    load_before = os.getloadavg()
    commit_before = _commit()
    ctx = Context(OUT / "logs", quick=args.quick)
    tools = Tools()
    rows: list[Row] = []
    try:
        for name in names:
            print(f"==> {name}", file=sys.stderr, flush=True)
            try:
                found = SCENARIOS[name](ctx, tools)
            except BenchFailure as exc:
                found = [Row(name, "(whole scenario)", error=str(exc))]
            rows += found
            print(markdown(found, {}), file=sys.stderr, flush=True)
    finally:
        ctx.close()
    header: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "repetitions": ctx.reps if args.quick else f"{ctx.reps}; prefetch, gate local: {prefetch.LOCAL_REPS}",
        "scenarios": ", ".join(names),
        "wall time": f"{time.monotonic() - started:.0f} s",
        # Other work on the machine shows here: the figures are ratios because of it.
        "load average (1, 5, 15 min) at start and end": f"{_load(load_before)}; {_load(os.getloadavg())}",
        # The installs are editable: commits landing during a run change what later steps measure.
        "commit at start and end": f"{commit_before}; {_commit()}",
        "machine": machine(),
        "versions": {"gocachegate": version("gocachegate"), **tools.versions()},
        "spread": "± half the range of the repetitions, relative to the median",
    }
    print(markdown(rows, header))
    write_json(args.json, rows, header)
    return 1 if any(row.error is not None for row in rows) else 0
