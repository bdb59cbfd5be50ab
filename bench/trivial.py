"""Scenario 4: a trivial build with everything already in the local cache, where start-up is all.

A developer's edit-build loop and every small ``go`` command in a CI script pay the helper's
start-up again: go starts the helper once per command and waits for its handshake. Compared:
``go build`` of a hello-world module on a warm native GOCACHE and on a warm L1 (the helper alone,
and the helper configured with a gate as in CI, on the same L1, so it never needs to ask). Target: 1.25x
native. Also reported: the helper's own start-to-handshake time, measured by starting it as go
does (stdin a pipe) and timing the first line it writes.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.gohelpers import Machine, helper_binary

from .backends import Backends
from .builds import helper_notes
from .gowork import Step, Workloads, gate_machine, native_machine, run_step
from .runner import BenchFailure, Context, Row, Series, Target, attempt, compare, repeat
from .tools import Tools

__all__ = ["l1_warm"]

TARGET = Target("<=", 1.25)


def _warm_series(ctx: Context, step: Step, machine: Machine, reps: int, notes: dict[str, object]) -> Series:
    run_step(ctx, machine, step)  # fills the cache (or warms up on a full one); not timed

    def once(_: int) -> float:
        run = run_step(ctx, machine, step)
        notes.update(helper_notes(run.stats))
        return run.seconds

    return repeat(reps, once)


def handshake_ms(times: int, l1: Path) -> Series:
    """Start ``gocacheprog`` as go does and time its first line, ``times`` times."""
    binary = helper_binary()

    def once(_: int) -> float:
        start = time.perf_counter()
        proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env={**os.environ, "GOCACHEGATE_DIR": str(l1)})
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        elapsed = (time.perf_counter() - start) * 1000
        proc.stdin.close()
        proc.wait(10)
        if not line.startswith(b'{"ID":0'):
            raise BenchFailure(f"gocacheprog's first line is not a handshake: {line[:80]!r}")
        return elapsed

    return repeat(times, once, "ms")


def l1_warm(ctx: Context, tools: Tools) -> list[Row]:
    reps = 3 if ctx.quick else 15
    step = Workloads(ctx).hello()
    try:
        native = ctx.once("native-warm:hello",
                          lambda: _warm_series(ctx, step, native_machine(ctx.scratch("native-hello")), reps, {}))
    except BenchFailure as exc:
        return [Row("l1-warm", f"{step.label}: native warm", error=str(exc))]

    l1 = ctx.scratch("l1")  # both helper cases use one L1: the second finds it warm

    def helper_row(name: str, url: str | None) -> Row:
        notes: dict[str, object] = {}
        machine = gate_machine(ctx.scratch("helper-hello"), url, GOCACHEGATE_DIR=str(l1))
        series = _warm_series(ctx, step, machine, reps, notes)
        return compare("l1-warm", name, series, "native warm", native, "time", TARGET, **notes)

    def handshake_row(name: str) -> Row:
        native_ms = Series(tuple(v * 1000 for v in native.values), "ms")
        return compare("l1-warm", name, handshake_ms(reps * 2, ctx.scratch("handshake")), "native warm build",
                       native_ms, "time")

    name = f"{step.label}: helper, L1 only"
    rows = [attempt("l1-warm", name, TARGET, helper_row, name, None)]
    with Backends(ctx, tools) as backends, backends.gate(backends.store("local")) as gate:
        name = f"{step.label}: helper + gate URL, L1 warm"
        rows.append(attempt("l1-warm", name, TARGET, helper_row, name, gate.url))
    name = "gocacheprog start to handshake"
    rows.append(attempt("l1-warm", name, None, handshake_row, name))
    return rows
