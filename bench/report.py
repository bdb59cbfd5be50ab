"""The results: a Markdown table for people, a JSON document for tools, both from the same rows."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from .runner import Row, Series

__all__ = ["machine", "markdown", "write_json"]


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpus": os.cpu_count(), "cpu": model, "memory_gib": round(memory / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(),
            "disk": filesystem(tempfile.gettempdir())}


def filesystem(path: str) -> str:
    """The filesystem the disk rows ran on (the runs' directories are under ``TMPDIR``): its type,
    device and mount point, and for ext4 whether it keeps a journal. Without one, ext4 skips every
    inode freed in the last minute when it makes a file, one at a time, and a fresh L1 made right
    after the previous run's was deleted costs several times the CPU (bench/RESULTS.md)."""
    path = os.path.realpath(path)
    try:
        mounts = [line.split()[:3] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    holding = [(device, mount.replace("\\040", " "), kind) for device, mount, kind in mounts
               if path == mount or path.startswith(mount.rstrip("/") + "/")]
    if not holding:
        return "unknown"
    device, mount, kind = max(holding, key=lambda m: len(m[1]))  # the innermost mount
    text = f"{kind} ({device} on {mount})"
    if kind == "ext4":
        try:
            task = Path(f"/sys/fs/ext4/{os.path.basename(device)}/journal_task").read_text().strip()
        except OSError:
            return text
        text += ", no journal" if task == "<none>" else ", journal"
    return text


def _value(series: Series | None) -> str:
    if series is None:
        return "-"
    median = series.median
    if series.unit == "s":
        return f"{median:.2f} s"
    if series.unit == "ms":
        return f"{median:.1f} ms"
    if series.unit == "req/s":
        return f"{median:,.0f} req/s"
    return f"{median:.4g} {series.unit}".rstrip()


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return "-"
    if row.kind == "speedup":
        return f"{row.ratio:.1f}x faster"
    if row.kind == "share":
        return f"{row.ratio:.0%}"
    if row.kind == "value":
        return _value(row.series)
    return f"{row.ratio:.2f}x"


def _target(row: Row) -> str:
    if row.target is None:
        return ""
    bound = row.target.bound
    op = "≤" if row.target.op == "<=" else "≥"
    if row.kind == "speedup":
        return f"{op} {bound:g}x faster"
    if row.kind == "share":
        return f"{op} {bound:.0%}"
    if row.kind == "value":
        return f"{op} {bound:g}"
    return f"{op} {bound:g}x"


def _mb(n: object) -> str:
    return f"{int(n) / 1e6:.1f} MB" if isinstance(n, int) else str(n)


def _notes(row: Row) -> str:
    notes = dict(row.notes)
    parts: list[str] = []
    if "gets" in notes:
        parts.append(
            f"gets {notes.pop('gets')}: {notes.pop('local_hits', 0)} L1, {notes.pop('remote_hits', 0)} remote, "
            f"{notes.pop('misses', 0)} miss"
        )
        parts.append(f"puts {notes.pop('puts', 0)}, uploaded {notes.pop('uploads', 0)}")
        errors = int(str(notes.pop("upload_errors", 0))) + int(str(notes.pop("remote_errors", 0)))
        if errors:
            parts.append(f"{errors} remote errors")
        parts.append(f"down {_mb(notes.pop('bytes_downloaded', 0))}, up {_mb(notes.pop('bytes_uploaded', 0))}")
        if notes.get("prefetched"):
            parts.append(f"prefetched {notes.pop('prefetched')} ({_mb(notes.pop('prefetch_bytes', 0))}), "
                         f"{notes.pop('prefetch_hits', 0)} used, {notes.pop('prefetch_wasted', 0)} unused")
        for key in ("prefetched", "prefetch_bytes", "prefetch_hits", "prefetch_wasted"):
            notes.pop(key, None)
        parts.append(f"remote wait {notes.pop('remote_wait_ms', 0)} ms")
    parts += [f"{key.replace('_', ' ')} {value}" for key, value in notes.items()]
    return "; ".join(parts)


def markdown(rows: list[Row], header: dict[str, object]) -> str:
    lines = [f"- {key}: {value}" for key, value in header.items()]
    lines += [
        "",
        "| scenario | case | median | spread | reference | ratio | target | verdict | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.error is not None:
            verdict = "**missed** (failed)" if row.target is not None else "**failed**"
            lines.append(f"| {row.scenario} | {row.case} | - | - | - | - | {_target(row)} | {verdict} | "
                         f"{row.error.replace('|', '/')} |")
            continue
        spread = f"±{row.series.spread / 2:.0%}" if row.series and len(row.series.values) > 1 else "-"
        reference = f"{row.reference} {_value(row.ref_series)}" if row.reference else "-"
        verdict = "" if row.met is None else ("met" if row.met else "**missed**")
        lines.append(f"| {row.scenario} | {row.case} | {_value(row.series)} | {spread} | {reference} | "
                     f"{_ratio(row)} | {_target(row)} | {verdict} | {_notes(row)} |")
    return "\n".join(lines) + "\n"


def write_json(path: Path, rows: list[Row], header: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"written": datetime.now(UTC).isoformat(timespec="seconds"), **header,
                "rows": [row.to_json() for row in rows]}
    path.write_text(json.dumps(document, indent=1) + "\n")
