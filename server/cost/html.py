"""The cost report as one self-contained HTML page: summary, three inline SVG charts, the table.

No script, no external stylesheet, font or image: the page opens the same from the gate, from a
file the CLI wrote, or from a CI artifact, with no network. Everything from the ledger (namespaces,
job names that any reader can set) is escaped.
"""

from __future__ import annotations

from html import escape

from ..units import hours, human_bytes, money, percent, times
from .charts import bars, columns
from .render import table_head, table_numbers
from .report import CostReport, CostRow

__all__ = ["to_html"]

_STORAGE, _OPS, _EGRESS = "#4e79a7", "#f28e2b", "#b07aa1"
_HITS, _MISSES = "#59a14f", "#e15759"
_COST, _SAVED = "#e15759", "#59a14f"
_TOP = 15  # categories drawn; the rest are summed into one bar

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 24px;
       max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; }
.period { color: #555; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 0 0 20px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; }
.chart { display: block; margin: 18px 0; max-width: 100%; height: auto; }
.chart text { font: 12px sans-serif; fill: #333; }
.chart .chart-title { font-size: 14px; font-weight: 600; }
.chart .grid { stroke: #e3e3e3; }
.chart .empty { fill: #888; }
table { border-collapse: collapse; margin: 18px 0; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.total td { font-weight: 600; border-top: 2px solid #999; }
.note { color: #555; font-size: 13px; }
"""


def _label(row: CostRow) -> str:
    return row.namespace if row.job is None else f"{row.namespace} / {row.job}"


def _top(rows: list[CostRow], key: str) -> list[CostRow]:
    """The largest rows by ``key``, the rest summed into one "others" row."""
    ordered = sorted(rows, key=lambda r: getattr(r, key), reverse=True)
    if len(ordered) <= _TOP:
        return ordered
    rest = ordered[_TOP - 1 :]
    others = CostRow(namespace=f"{len(rest)} others")
    for name in ("storage_usd", "operations_usd", "egress_usd", "total_usd", "saved_usd"):
        setattr(others, name, sum(getattr(r, name) for r in rest))
    return [*ordered[: _TOP - 1], others]


def _short_time(start: str, step: str) -> str:
    return f"{start[5:10]} {start[11:13]}h" if step == "hour" else start[5:10]


def _charts(report: CostReport) -> list[str]:
    by_cost = _top(report.rows, "total_usd")
    cost = bars(
        "Cost per " + ("namespace" if report.group_by == "namespace" else "namespace and job"),
        [_label(r) for r in by_cost],
        [
            ("storage", _STORAGE, [r.storage_usd for r in by_cost]),
            ("operations", _OPS, [r.operations_usd for r in by_cost]),
            ("egress", _EGRESS, [r.egress_usd for r in by_cost]),
        ],
        money,
        stacked=True,
    )
    labels = [_short_time(p.start, report.series_step) for p in report.series]
    over_time = columns(
        f"Hits and misses per {report.series_step}",
        labels,
        [
            ("hits", _HITS, [float(p.hits) for p in report.series]),
            ("misses", _MISSES, [float(p.misses) for p in report.series]),
        ],
        lambda v: f"{v:,.0f}",
    )
    by_value = _top(report.rows, "saved_usd")
    savings = bars(
        "Saved (CPU time not spent) against cost",
        [_label(r) for r in by_value],
        [("cost", _COST, [r.total_usd for r in by_value]), ("saved", _SAVED, [r.saved_usd for r in by_value])],
        money,
        stacked=False,
    )
    return [cost, over_time, savings]


def _table(report: CostReport) -> list[str]:
    by_job = report.group_by == "job"
    head = table_head(by_job)
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead>", "<tbody>"]
    for row in [*report.rows, report.totals]:
        texts = [row.namespace, *([row.job or ""] if by_job else [])]
        numbers = table_numbers(row)
        cls = ' class="total"' if row is report.totals else ""
        cells = "".join(f'<td class="text">{escape(t)}</td>' for t in texts)
        cells += "".join(f"<td>{escape(n)}</td>" for n in numbers)
        out.append(f"<tr{cls}>{cells}</tr>")
    out += ["</tbody>", "</table>"]
    return out


def to_html(report: CostReport) -> str:
    t, p = report.totals, report.prices
    cards = [
        ("cost", money(report.total_usd)),
        ("saved", money(report.saved_usd)),
        ("return", times(report.roi)),
        ("hit ratio", percent(t.hit_ratio)),
        ("CPU hours saved", hours(t.cpu_hours_saved)),
        ("stored", human_bytes(t.stored_bytes)),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        "<title>gocachegate cost report</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<h1>gocachegate cost report</h1>",
        f'<p class="period">{escape(report.since)} to {escape(report.until)} ({report.hours / 24:.1f} days)</p>',
        '<div class="cards">',
        *(f'<div class="card">{escape(name)}<b>{escape(value)}</b></div>' for name, value in cards),
        "</div>",
        *_charts(report),
        *_table(report),
        '<p class="note">Prices (USD): storage '
        + escape(f"{p.storage_gb_month:g}/GiB-month, Class A {p.class_a_per_1000:g}/1,000, Class B ")
        + escape(f"{p.class_b_per_1000:g}/1,000, egress {p.egress_gb:g}/GiB, CPU {p.cpu_vcpu_hour:g}/vCPU-hour. ")
        + "Storage is priced from the bytes stored now, over the whole period; savings count the compute time "
        "recorded with each entry that a hit served.</p>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)
