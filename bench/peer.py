"""Scenario 6: the Go helper a team would otherwise pick, side by side with gocachegate.

saracen/gobuildcache is a GOCACHEPROG process that talks to a bucket itself through gocloud.dev
(no gate in between). Both run against the same fake-gcs-server, each on fresh buckets: a cold
build (empty local cache, empty bucket, writing), then a remote-warm build (empty local cache,
a bucket that one cold build filled). The ratio is gocachegate's time over the peer's; target:
not slower (<= 1). Where the peer cannot use the emulator, it is compared on a ``file://`` bucket
against the gate on a local directory instead, and the first row says why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.gohelpers import Machine

from .backends import Backends, Kind
from .builds import cold_series, fill, native_cold, warm_series
from .gowork import Step, Workloads, run_step
from .runner import BenchFailure, Context, Row, Series, Target, compare, repeat
from .tools import PEER_MODULE, Tools

__all__ = ["peer"]

TARGET = Target("<=", 1.0)
PEER = PEER_MODULE.removeprefix("github.com/")


def _peer_series(ctx: Context, step: Step, machine_for: Callable[[Path], Machine]) -> Series:
    def once(_: int) -> float:
        root = ctx.scratch(f"peer-{step.key}")
        try:
            return run_step(ctx, machine_for(root), step).seconds
        finally:
            ctx.discard(root)

    return repeat(ctx.reps, once)


def _side_by_side(ctx: Context, backends: Backends, step: Step, binary: Path, kind: Kind) -> list[Row]:
    """Cold and remote-warm: the peer on buckets of its own, the gate on fresh stores of ``kind``."""
    env = backends.emulator.gate_env() if kind == "gcs" else {}

    def bucket() -> str:
        if kind == "gcs":
            return f"gs://{backends.store('gcs').bucket}"
        return f"file://{ctx.scratch('peer-bucket')}"

    def machine(bucket_url: Callable[[], str]) -> Callable[[Path], Machine]:
        return lambda root: Machine(root, None, GOCACHEPROG=f"{binary} {bucket_url()}", **env)

    native_cold(ctx, step)  # the output check's reference
    peer_cold = _peer_series(ctx, step, machine(bucket))
    filled = bucket()
    run_step(ctx, machine(lambda: filled)(ctx.scratch("peer-filler")), step)
    peer_warm = _peer_series(ctx, step, machine(lambda: filled))

    cold_notes: dict[str, object] = {}
    ours_cold = cold_series(ctx, backends, step, kind, cold_notes)
    store = backends.store(kind)
    fill(ctx, backends, store, [step])
    warm_notes: dict[str, object] = {}
    with backends.gate(store) as gate:
        ours_warm = warm_series(ctx, step, gate.url, warm_notes)
    where = "fake-gcs-server" if kind == "gcs" else "peer on file://, gate on a local directory"
    return [
        compare("peer", f"{step.label} cold: gocachegate vs {PEER} ({where})", ours_cold, PEER, peer_cold,
                "time", TARGET, **cold_notes),
        compare("peer", f"{step.label} remote-warm: gocachegate vs {PEER} ({where})", ours_warm, PEER, peer_warm,
                "time", TARGET, **warm_notes),
    ]


def peer(ctx: Context, tools: Tools) -> list[Row]:
    step = Workloads(ctx).builds()[0]
    name = f"{step.label}: gocachegate vs {PEER}"
    try:
        binary = tools.get("gobuildcache")
    except BenchFailure as exc:
        return [Row("peer", name, target=TARGET, error=f"{PEER} could not be installed, so it was not compared: {exc}")]
    with Backends(ctx, tools) as backends:
        try:
            return _side_by_side(ctx, backends, step, binary, "gcs")
        except BenchFailure as exc:
            on_emulator = Row("peer", f"{name} (fake-gcs-server)", target=TARGET, error=str(exc))
        try:
            return [on_emulator, *_side_by_side(ctx, backends, step, binary, "local")]
        except BenchFailure as exc:
            return [on_emulator, Row("peer", f"{name} (file://)", target=TARGET, error=str(exc))]
