"""Scenario 7: what a build costs in storage operations and bytes, read from counters.

One postsubmit-like cold build fills a fresh bucket on fake-gcs-server through a fresh gate, then
one fresh machine builds the same thing remote-warm. Nothing is estimated:

- storage reads per remote hit: the gate's ``gocachegate_storage_operations_total{op="read",
  outcome="ok"}`` during the warm build over the helper's ``remote_hits`` (design: 1; a miss
  costs a read too, shown beside it with the Class A and B totals);
- storage writes per new entry: ``op="write"`` during the cold build over the gate's
  ``gocachegate_cache_puts_total{result="new"}`` (design: 1);
- stored bytes over logical bytes: the bucket's object sizes over the decoded sizes in each
  object's metadata, from the emulator's listing;
- bytes over the wire per remote-warm build: the helper's ``bytes_downloaded`` +
  ``prefetch_bytes`` + ``bytes_uploaded`` (the gate's ``gocachegate_cache_bytes_sent_total`` beside
  it), against the logical bytes of the whole bucket.
"""

from __future__ import annotations

from .backends import Backends
from .builds import native_cold
from .gowork import Workloads, gate_machine, run_step
from .runner import BenchFailure, Context, Row, Series, Target, compare
from .servers import Gate
from .tools import Tools

__all__ = ["cost"]

PER_CALL = Target("<=", 1.0)


def _count(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        metric, _, rest = key.partition("{")
        pairs = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if p)
        if metric == name and all(pairs.get(k) == v for k, v in labels.items()):
            total += value
    return total


def _delta(gate: Gate, before: dict[str, float], name: str, **labels: str) -> float:
    return _count(gate.metrics(), name, **labels) - _count(before, name, **labels)


def _decoded_size(listed: dict[str, object]) -> int:
    """An entry's decoded size, from the metadata the gate stores with it."""
    metadata = listed.get("metadata")
    return int(metadata.get("size", 0)) if isinstance(metadata, dict) else 0


def _value(name: str, value: float, unit: str, reference: str, ref: float, target: Target | None = None,
           **notes: object) -> Row:
    return compare("cost", name, Series((value,), unit), reference, Series((ref,), unit), "value", target, **notes)


def cost(ctx: Context, tools: Tools) -> list[Row]:
    step = Workloads(ctx).builds()[0]
    native_cold(ctx, step)  # the output check's reference
    ops = "gocachegate_storage_operations_total"
    with Backends(ctx, tools) as backends:
        store = backends.store("gcs")
        with backends.gate(store) as gate:
            before = gate.metrics()
            cold = run_step(ctx, gate_machine(ctx.scratch("cost-cold"), gate.url), step).stats
            writes = _delta(gate, before, ops, op="write")
            new = _delta(gate, before, "gocachegate_cache_puts_total", result="new")
            before = gate.metrics()
            warm = run_step(ctx, gate_machine(ctx.scratch("cost-warm"), gate.url), step).stats
            reads = _delta(gate, before, ops, op="read", outcome="ok")
            all_reads = _delta(gate, before, ops, op="read")
            class_a = _delta(gate, before, ops, **{"class": "A"})
            class_b = _delta(gate, before, ops, **{"class": "B"})
            sent = _delta(gate, before, "gocachegate_cache_bytes_sent_total")
        assert store.bucket is not None
        objects = backends.emulator.objects(store.bucket)
    stored = sum(int(str(o["size"])) for o in objects)
    logical = sum(_decoded_size(o) for o in objects)
    if not new or not warm.get("remote_hits") or not logical:
        raise BenchFailure(f"nothing to divide by: {new:g} new entries, {warm.get('remote_hits')} remote hits, "
                           f"{logical} logical bytes")
    wire = warm["bytes_downloaded"] + warm.get("prefetch_bytes", 0) + warm["bytes_uploaded"]
    return [
        _value(f"{step.label}: storage reads per remote hit", reads / warm["remote_hits"], "reads", "design", 1.0,
               PER_CALL, remote_hits=warm["remote_hits"], reads_that_hit=int(reads), reads_in_all=int(all_reads),
               class_a=int(class_a),
               class_b=int(class_b)),
        _value(f"{step.label}: storage writes per new entry", writes / new, "writes", "design", 1.0, PER_CALL,
               new_entries=int(new), writes=int(writes), helper_uploads=cold["uploads"]),
        _value(f"{step.label}: stored bytes / logical bytes", stored / logical, "", "logical", 1.0,
               objects=len(objects), stored_bytes=stored, logical_bytes=logical),
        _value(f"{step.label}: MB over the wire, remote-warm build", wire / 1e6, "MB", "logical MB in bucket",
               logical / 1e6, bytes_downloaded=warm["bytes_downloaded"], prefetch_bytes=warm.get("prefetch_bytes", 0),
               bytes_uploaded=warm["bytes_uploaded"], gate_bytes_sent=int(sent)),
    ]
