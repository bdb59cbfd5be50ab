"""Bar charts as inline SVG, drawn here so the report page needs no script, font or network.

Two shapes cover the report: horizontal bars per category (stacked parts, or side by side), and
stacked columns over time. Every label is escaped; every bar carries a ``<title>`` tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

__all__ = ["Series", "bars", "columns"]

#: (legend name, fill colour, one value per category or point)
Series = tuple[str, str, Sequence[float]]
Format = Callable[[float], str]

_WIDTH = 760
_CHAR = 6.6  # px per character of 12px sans-serif text, roughly
_LABEL_MAX = 32


def _nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and round steps (1, 2, 5 * 10^k) up to at least ``top``."""
    if top <= 0:
        return [0.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_MAX else label[: _LABEL_MAX - 1] + "…"


def _open(title: str, height: int) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_WIDTH} {height}" '
        f'width="{_WIDTH}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
    ]


def _legend(series: Sequence[Series], y: float) -> list[str]:
    out, x = [], 0.0
    for name, colour, _ in series:
        out.append(f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 17:.1f}" y="{y:.1f}" class="legend">{escape(name)}</text>')
        x += 30 + len(name) * _CHAR
    return out


def _empty(title: str) -> str:
    return "\n".join([*_open(title, 70), '<text x="0" y="50" class="empty">no data in this period</text>', "</svg>"])


def bars(title: str, categories: Sequence[str], series: Sequence[Series], fmt: Format, *, stacked: bool) -> str:
    """Horizontal bars, one band per category: the series stacked in one bar, or one bar each."""
    totals = [sum(s[2][i] for s in series) if stacked else max(s[2][i] for s in series) for i in range(len(categories))]
    if not categories or max(totals, default=0) <= 0:
        return _empty(title)
    bar_h = 16 if stacked else 11
    band = (bar_h if stacked else bar_h * len(series)) + 10
    left = min(max(len(_short(c)) for c in categories) * _CHAR + 12, 240)
    right = 70
    top = 44
    plot_w = _WIDTH - left - right
    height = int(top + band * len(categories) + 46)
    ticks = _nice_ticks(max(totals))
    scale = plot_w / ticks[-1]
    out = _open(title, height)
    out += _legend(series, 34)
    for tick in ticks:
        x = left + tick * scale
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + band * len(categories)}" class="grid"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + band * len(categories) + 16}" class="tick" '
            f'text-anchor="middle">{escape(fmt(tick))}</text>'
        )
    for i, category in enumerate(categories):
        y0 = top + i * band + 5
        out.append(
            f'<text x="{left - 8}" y="{y0 + (band - 10) / 2 + 4:.1f}" class="label" '
            f'text-anchor="end">{escape(_short(category))}<title>{escape(category)}</title></text>'
        )
        x = float(left)
        for j, (name, colour, values) in enumerate(series):
            width = values[i] * scale
            if width <= 0:
                continue
            y = y0 if stacked else y0 + j * bar_h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 1):.1f}" height="{bar_h - 1}" fill="{colour}">'
                f"<title>{escape(category)}: {escape(name)} {escape(fmt(values[i]))}</title></rect>"
            )
            if stacked:
                x += width
        end = left + totals[i] * scale
        out.append(
            f'<text x="{end + 5:.1f}" y="{y0 + (band - 10) / 2 + 4:.1f}" class="value">{escape(fmt(totals[i]))}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def columns(title: str, labels: Sequence[str], series: Sequence[Series], fmt: Format) -> str:
    """Stacked columns over time, one per label, with every few labels shown under the axis."""
    totals = [sum(s[2][i] for s in series) for i in range(len(labels))]
    if not labels or max(totals, default=0) <= 0:
        return _empty(title)
    left, right, top, plot_h = 56, 10, 44, 180
    plot_w = _WIDTH - left - right
    height = top + plot_h + 40
    ticks = _nice_ticks(max(totals))
    scale = plot_h / ticks[-1]
    step = plot_w / len(labels)
    out = _open(title, height)
    out += _legend(series, 34)
    for tick in ticks:
        y = top + plot_h - tick * scale
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{_WIDTH - right}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{escape(fmt(tick))}</text>')
    every = max(1, math.ceil(len(labels) / 8))
    for i, label in enumerate(labels):
        x = left + i * step
        y = float(top + plot_h)
        for name, colour, values in series:
            h = values[i] * scale
            if h <= 0:
                continue
            y -= h
            out.append(
                f'<rect x="{x + step * 0.1:.1f}" y="{y:.1f}" width="{max(step * 0.8, 1):.1f}" '
                f'height="{max(h, 0.5):.1f}" fill="{colour}">'
                f"<title>{escape(label)}: {escape(name)} {escape(fmt(values[i]))}</title></rect>"
            )
        if i % every == 0:
            out.append(
                f'<text x="{x + step / 2:.1f}" y="{top + plot_h + 16}" class="tick" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out)
