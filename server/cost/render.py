"""The cost report as CSV (every field, full precision, for spreadsheets) and Markdown (rounded, for
people and pull-request comments)."""

from __future__ import annotations

import csv
import html
import io

from ..units import hours, human_bytes, money, percent, times
from .report import CostReport, CostRow

__all__ = ["CONTENT_TYPES", "table_head", "table_numbers", "to_csv", "to_markdown"]

CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
}

_CSV_FIELDS = [name for name in CostRow.model_fields if name != "job"]


def to_csv(report: CostReport) -> str:
    fields = ["namespace", "job", *_CSV_FIELDS[1:]] if report.group_by == "job" else _CSV_FIELDS
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in [*report.rows, report.totals]:
        writer.writerow({name: "" if value is None else value for name, value in row.model_dump().items()})
    return out.getvalue()


def _cell(text: str) -> str:
    """A Markdown table cell: no line breaks, pipes escaped, and no HTML (labels come from requests)."""
    return html.escape(text.replace("\\", "\\\\"), quote=False).replace("|", "\\|").replace("\n", " ")


def table_head(by_job: bool) -> list[str]:
    """The columns people read (Markdown and HTML): the label columns, then ``table_numbers``'s."""
    head = ["namespace", *(["job"] if by_job else [])]
    head += ["entries", "stored", "requests", "hit ratio", "storage", "operations", "egress", "total"]
    return [*head, "CPU hours saved", "saved", "return"]


def table_numbers(row: CostRow) -> list[str]:
    """A row's figures, rounded and with units, in ``table_head``'s order."""
    return [
        f"{row.entries:,}",
        human_bytes(row.stored_bytes),
        f"{row.requests:,}",
        percent(row.hit_ratio),
        money(row.storage_usd),
        money(row.operations_usd),
        money(row.egress_usd),
        money(row.total_usd),
        hours(row.cpu_hours_saved),
        money(row.saved_usd),
        times(row.roi),
    ]


def _md_row(row: CostRow, by_job: bool, bold: bool = False) -> str:
    cells = [row.namespace, *([row.job or ""] if by_job else []), *table_numbers(row)]
    cells = [_cell(c) for c in cells]
    if bold:
        cells = [f"**{c}**" if c else c for c in cells]
    return "| " + " | ".join(cells) + " |"


def to_markdown(report: CostReport) -> str:
    by_job = report.group_by == "job"
    p = report.prices
    head = table_head(by_job)
    align = ["---"] * (2 if by_job else 1) + ["--:"] * (len(head) - (2 if by_job else 1))
    t = report.totals
    lines = [
        "# gocachegate cost report",
        "",
        f"{report.since} to {report.until} ({report.hours / 24:.1f} days). "
        f"Cost {money(report.total_usd)}, saved {money(report.saved_usd)} "
        f"({hours(t.cpu_hours_saved)} CPU hours), return {times(report.roi)}, hit ratio {percent(t.hit_ratio)}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(align) + "|",
        *(_md_row(row, by_job) for row in report.rows),
        _md_row(t, by_job, bold=True),
        "",
        f"Prices (USD): storage {p.storage_gb_month:g}/GiB-month, Class A {p.class_a_per_1000:g}/1,000, "
        f"Class B {p.class_b_per_1000:g}/1,000, egress {p.egress_gb:g}/GiB, CPU {p.cpu_vcpu_hour:g}/vCPU-hour. "
        "Storage is priced from the bytes stored now, over the whole period.",
        "",
    ]
    return "\n".join(lines)
