"""The shared runner: repetitions, medians, ratios against a reference from the same run.

Absolute times on a shared 2-core machine are noise, so every figure the suite prints is a
ratio to a reference measured in the same run, next to the median and spread it came from. A
scenario that cannot produce an honest number (a go command failed, or built something other
than native did) raises ``BenchFailure``; its row then says why instead of showing a figure.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

__all__ = [
    "BenchFailure",
    "Context",
    "Row",
    "Series",
    "Target",
    "attempt",
    "compare",
    "repeat",
]

_T = TypeVar("_T")

#: How a row's ratio reads: ``time`` = value / reference (lower is better), ``speedup`` =
#: reference / value, ``share`` = value / reference for rates (higher is better), ``value`` = the
#: median itself, the reference shown beside it (a p99 bound, reads per hit, bytes per byte).
RatioKind = Literal["time", "speedup", "share", "value"]


class BenchFailure(Exception):
    """A measured step failed or gave other output than its reference: no number for it."""


@dataclass(frozen=True)
class Series:
    """The values of one case over its repetitions."""

    values: tuple[float, ...]
    unit: str  # "s", "ms", "req/s", ...

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median: how far apart the repetitions landed."""
        median = self.median
        return (max(self.values) - min(self.values)) / median if median else 0.0

    def to_json(self) -> dict[str, object]:
        return {"unit": self.unit, "median": self.median, "spread": self.spread, "values": list(self.values)}


@dataclass(frozen=True)
class Target:
    """The issue's bound on a row's ratio."""

    op: Literal["<=", ">="]
    bound: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.bound if self.op == "<=" else ratio >= self.bound


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    case: str
    series: Series | None = None
    reference: str | None = None  # what the ratio is taken against
    ref_series: Series | None = None
    kind: RatioKind = "time"
    ratio: float | None = None
    target: Target | None = None
    error: str | None = None
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.ratio is None:
            return False
        return self.target.met(self.ratio)

    def to_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "case": self.case,
            "series": None if self.series is None else self.series.to_json(),
            "reference": self.reference,
            "reference_series": None if self.ref_series is None else self.ref_series.to_json(),
            "kind": self.kind,
            "ratio": self.ratio,
            "target": None if self.target is None else f"{self.target.op} {self.target.bound}",
            "met": self.met,
            "error": self.error,
            "notes": self.notes,
        }


def compare(
    scenario: str,
    case: str,
    series: Series,
    reference: str,
    ref_series: Series,
    kind: RatioKind,
    target: Target | None = None,
    **notes: object,
) -> Row:
    """A row whose ratio is ``series`` against ``ref_series`` (medians), read as ``kind`` says."""
    if kind == "speedup":
        ratio = ref_series.median / series.median
    elif kind == "value":
        ratio = series.median
    else:
        ratio = series.median / ref_series.median
    return Row(scenario, case, series, reference, ref_series, kind, ratio, target, notes=notes)


def attempt(scenario: str, case: str, target: Target | None, make: Callable[..., Row], *args: object) -> Row:
    """``make(*args)``, or a row saying why it could not be measured (its target then counts as missed)."""
    try:
        return make(*args)
    except BenchFailure as exc:
        return Row(scenario, case, target=target, error=str(exc))


def repeat(times: int, once: Callable[[int], float], unit: str = "s") -> Series:
    """Run ``once(i)`` ``times`` times; each call sets up its own fresh state and returns one value."""
    return Series(tuple(once(i) for i in range(times)), unit)


class Context:
    """What every scenario shares in one run: the mode, a scratch area, and memoized references.

    References (native cold times, the output native produced) are measured once per run and
    reused by every scenario that compares against them, so ``--only`` still measures them and a
    full run does not measure them twice.
    """

    def __init__(self, logs: Path, *, quick: bool) -> None:
        self.quick = quick
        self.reps = 1 if quick else 3
        # Outside the checkout: the real module's copy must not meet the repository's linters.
        self.work = Path(tempfile.mkdtemp(prefix="gocachegate-bench-"))
        self.logs = logs / self.work.name
        self._memo: dict[str, object] = {}
        self._count = 0
        self._memory: Path | None = None

    def scratch(self, name: str, *, memory: bool = False) -> Path:
        """A new empty directory for one machine, gate or bucket; ``memory``: on tmpfs
        (``/dev/shm``), as a pod's ``emptyDir`` with ``medium: Memory`` is."""
        self._count += 1
        path = (self._memory_root() if memory else self.work) / f"{self._count:04d}-{name}"
        path.mkdir(parents=True)
        return path

    def _memory_root(self) -> Path:
        if self._memory is None:
            shm = Path("/dev/shm")
            if not shm.is_dir() or not os.access(shm, os.W_OK):
                raise BenchFailure("no writable /dev/shm (tmpfs) on this machine")
            self._memory = Path(tempfile.mkdtemp(prefix="gocachegate-bench-", dir=shm))
        return self._memory

    def once(self, key: str, make: Callable[[], _T]) -> _T:
        """``make()`` the first time ``key`` is asked for in this run, the same value after."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]  # type: ignore[return-value]

    def has(self, key: str) -> bool:
        return key in self._memo

    def discard(self, path: Path) -> None:
        """Free the disk a finished step used (a cold std build leaves hundreds of MB)."""
        shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Remove the scratch area, keeping the servers' logs in ``self.logs``."""
        for log in self.work.rglob("*.log"):
            self.logs.mkdir(parents=True, exist_ok=True)
            shutil.move(log, self.logs / f"{log.parent.name}-{log.name}")
        shutil.rmtree(self.work, ignore_errors=True)
        if self._memory is not None:
            shutil.rmtree(self._memory, ignore_errors=True)
