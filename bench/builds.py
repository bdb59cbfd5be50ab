"""Scenarios 1-3: cold builds, and remote-warm builds (the CI case) with and without storage latency.

Reference for all three: the same go command on Go's own cache, empty (``native cold``).

- ``cold``: an empty cache everywhere: native, the helper on L1 alone, the helper writing through
  a fresh gate (local directory, and a fresh bucket on fake-gcs-server). Target: writers within
  5% of native (uploads run behind the build and are flushed at close, inside the timed span).
  Repetitions are interleaved across the cases.
- ``remote-warm``: a new pod: an empty L1 against a gate that a previous job filled. Target:
  ``go build std`` 20x faster than native cold; vet and test of the real module are reported
  too (a test result is expected back as ``(cached)``).
- ``remote-warm-latency``: the same with 30 ms added to every storage call (the gcs backend
  through ``bench/latencyproxy``). Target: 8x.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial

from .backends import Backends, Kind, Store
from .gowork import Step, Workloads, cached_tests, gate_machine, native_machine, run_step
from .runner import BenchFailure, Context, Row, Series, Target, attempt, compare, repeat
from .tools import Tools

__all__ = [
    "LATENCY_MS",
    "cold",
    "cold_series",
    "fill",
    "helper_notes",
    "native_cold",
    "remote_warm",
    "remote_warm_latency",
    "warm_series",
]

LATENCY_MS = 30.0
COLD_TARGET = Target("<=", 1.05)
WARM_TARGET = Target(">=", 20.0)
LATENCY_TARGET = Target(">=", 8.0)


def _native_once(ctx: Context, step: Step, memory: bool = False) -> float:
    root = ctx.scratch(f"native-{step.key}", memory=memory)
    try:
        return run_step(ctx, native_machine(root), step).seconds
    finally:
        ctx.discard(root)


def native_cold(ctx: Context, step: Step, memory: bool = False) -> Series:
    """``step`` on an empty native GOCACHE, measured once per run for everyone to compare with;
    ``memory``: the GOCACHE on tmpfs."""
    key = f"native-cold:{step.key}" + (":memory" if memory else "")
    return ctx.once(key, lambda: repeat(ctx.reps, lambda _: _native_once(ctx, step, memory)))


def helper_notes(stats: dict[str, int]) -> dict[str, object]:
    """The helper counters worth a column: where the gets were served, what crossed the wire."""
    keys = ("gets", "local_hits", "remote_hits", "misses", "puts", "uploads", "upload_errors",
            "remote_errors", "remote_wait_ms", "bytes_downloaded", "bytes_uploaded", "prefetched",
            "prefetch_hits", "prefetch_bytes", "prefetch_wasted")
    return {key: stats[key] for key in keys if key in stats}


GateFor = Callable[[], AbstractContextManager[str | None]]


def _helper_once(ctx: Context, step: Step, gate_url: GateFor, notes: dict[str, object]) -> float:
    """``step`` once on a helper with an empty L1, through the gate ``gate_url()`` opens for it
    (None: L1 only); its counters go into ``notes``."""
    root = ctx.scratch(f"helper-{step.key}")
    try:
        with gate_url() as url:
            run = run_step(ctx, gate_machine(root, url), step)
    finally:
        ctx.discard(root)
    notes.update(helper_notes(run.stats))
    said = [line.removeprefix("gocacheprog: ") for line in run.stderr.splitlines()
            if line.startswith("gocacheprog:")]
    if said:
        notes["helper_said"] = " / ".join(said[:3])
    if step.key == "mod-test":
        cached, tested = cached_tests(run)
        notes["cached_tests"] = f"{cached}/{tested}"
    return run.seconds


def _fresh_gate(backends: Backends, kind: Kind | None) -> GateFor:
    """A new gate on a new store of ``kind`` for each call (None: no gate, L1 only)."""

    @contextmanager
    def opened() -> Iterator[str | None]:
        if kind is None:
            yield None
            return
        store = backends.store(kind)
        with backends.gate(store) as gate:
            yield gate.url
        backends.discard(store)

    return opened


def cold_series(ctx: Context, backends: Backends, step: Step, kind: Kind | None, notes: dict[str, object]) -> Series:
    """``step`` on an empty L1, each repetition writing through a new gate to a new store of ``kind``."""
    return repeat(ctx.reps, lambda _: _helper_once(ctx, step, _fresh_gate(backends, kind), notes))


def warm_series(ctx: Context, step: Step, url: str, notes: dict[str, object]) -> Series:
    """``step`` on an empty L1 against the filled gate at ``url``."""
    return repeat(ctx.reps, lambda _: _helper_once(ctx, step, lambda: nullcontext(url), notes))


_COLD_CASES: tuple[tuple[str, Kind | None], ...] = (
    ("helper, L1 only", None), ("helper + gate, local", "local"), ("helper + gate, gcs emulator", "gcs"))


class _Cases:
    """The helper cases of one cold step, filled one repetition at a time."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {case: [] for case, _ in _COLD_CASES}
        self.notes: dict[str, dict[str, object]] = {case: {} for case, _ in _COLD_CASES}
        self.failed: dict[str, str] = {}

    def run_once(self, ctx: Context, backends: Backends, step: Step) -> None:
        for case, kind in _COLD_CASES:
            if case in self.failed:
                continue
            try:
                self.values[case].append(_helper_once(ctx, step, _fresh_gate(backends, kind), self.notes[case]))
            except BenchFailure as exc:
                self.failed[case] = str(exc)

    def rows(self, step: Step, reference: Series) -> list[Row]:
        rows = []
        for case, kind in _COLD_CASES:
            target = None if kind is None else COLD_TARGET
            name = f"{step.label}: {case}"
            if case in self.failed:
                rows.append(Row("cold", name, target=target, error=self.failed[case]))
            else:
                rows.append(compare("cold", name, Series(tuple(self.values[case]), "s"), "native cold", reference,
                                    "time", target, **self.notes[case]))
        return rows


def cold(ctx: Context, tools: Tools) -> list[Row]:
    """Repetitions interleaved (native, then each case, then again), so that load from elsewhere on
    the machine falls on all of them alike rather than on whichever case ran during it."""
    rows: list[Row] = []
    with Backends(ctx, tools) as backends:
        for step in Workloads(ctx).builds():
            native: list[float] = []
            cases = _Cases()
            try:
                for _ in range(ctx.reps):
                    native.append(_native_once(ctx, step))
                    cases.run_once(ctx, backends, step)
            except BenchFailure as exc:
                rows.append(Row("cold", f"{step.label}: native", error=str(exc)))
                continue
            rows += cases.rows(step, ctx.once(f"native-cold:{step.key}", partial(Series, tuple(native), "s")))
    return rows


def fill(ctx: Context, backends: Backends, store: Store, steps: list[Step]) -> dict[str, int]:
    """What a postsubmit does: run ``steps`` once on an empty L1, writing through a gate to ``store``.

    Returns the counters of each step. Native runs first, for the output check.
    """
    for step in steps:
        native_cold(ctx, step)
    root = ctx.scratch("filler")
    stats: dict[str, int] = {}
    with backends.gate(store) as gate:
        machine = gate_machine(root, gate.url)
        for step in steps:
            for key, value in run_step(ctx, machine, step).stats.items():
                stats[key] = stats.get(key, 0) + value
    ctx.discard(root)
    return stats


def _warm_rows(ctx: Context, tools: Tools, scenario: str, kinds: tuple[Kind, ...], latency_ms: float,
               target: Target) -> list[Row]:
    work = Workloads(ctx)
    steps = [*work.builds(), work.module_vet(), work.module_test()]
    rows: list[Row] = []
    with Backends(ctx, tools) as backends:
        for kind in kinds:
            label = f"gate {kind}" + (f" +{latency_ms:g} ms per storage call" if latency_ms else "")
            store = backends.store(kind)
            try:
                fill(ctx, backends, store, steps)
            except BenchFailure as exc:
                rows.append(Row(scenario, f"filling the gate ({label})", target=target, error=str(exc)))
                continue
            with backends.gate(store, latency_ms) as gate:
                for step in steps:
                    step_target = target if step.key == "std" else None
                    name = f"{step.label}: {label}"
                    rows.append(attempt(scenario, name, step_target, _warm_row, ctx, scenario, step, name,
                                        gate.url, step_target))
            backends.discard(store)
    return rows


def _warm_row(ctx: Context, scenario: str, step: Step, name: str, url: str, target: Target | None) -> Row:
    reference = native_cold(ctx, step)
    notes: dict[str, object] = {}
    series = warm_series(ctx, step, url, notes)
    return compare(scenario, name, series, "native cold", reference, "speedup", target, **notes)


def remote_warm(ctx: Context, tools: Tools) -> list[Row]:
    return _warm_rows(ctx, tools, "remote-warm", ("local", "gcs"), 0, WARM_TARGET)


def remote_warm_latency(ctx: Context, tools: Tools) -> list[Row]:
    return _warm_rows(ctx, tools, "remote-warm-latency", ("gcs",), LATENCY_MS, LATENCY_TARGET)
