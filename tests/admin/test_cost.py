"""Cost reports: the arithmetic against a worked example computed by hand, the same arithmetic on a
live gate whose operations are known request by request, and the four formats agreeing."""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from server.cost.html import to_html
from server.cost.prices import PriceSettings
from server.cost.render import to_csv, to_markdown
from server.cost.report import build_report
from server.inventory import NamespaceStats, Stats
from server.usage.counters import Counts
from server.usage.query import UsageTable
from tests.admin.conftest import Cache, action_of
from tests.gate.conftest import in_process, new_action

GIB = 1 << 30
SINCE, UNTIL = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 11, tzinfo=UTC)  # 240 hours
PRICES = PriceSettings(
    storage_gb_month=0.02, class_a_per_1000=0.005, class_b_per_1000=0.0004, egress_gb=0.12, cpu_vcpu_hour=0.03
)


def _stats(**stored_gib: float) -> Stats:
    namespaces = {
        ns.replace("_", "."): NamespaceStats(entries=1000, bytes=int(gib * GIB * 3), stored_bytes=int(gib * GIB))
        for ns, gib in stored_gib.items()
    }
    return Stats(entries=0, bytes=0, stored_bytes=0, namespaces=namespaces)


def _worked_example(group_by: str) -> Any:
    a = Counts(requests=1_000_000, hits=900_000, misses=100_000, ops_a=200_000, ops_b=3_000_000,
               bytes_out=50 * GIB, compute_ms_saved=7_200_000_000)
    b = Counts(requests=40_000, misses=40_000, ops_a=10_000, ops_b=40_000)
    if group_by == "namespace":
        usage = UsageTable(SINCE, UNTIL, ("namespace",), rows={("team.a",): a, ("team.b",): b})
    else:
        a1 = Counts(hits=600_000, misses=50_000, ops_a=150_000, ops_b=2_000_000, bytes_out=30 * GIB,
                    compute_ms_saved=3_600_000_000)
        a2 = Counts(hits=300_000, misses=50_000, ops_a=50_000, ops_b=1_000_000, bytes_out=20 * GIB,
                    compute_ms_saved=3_600_000_000)
        usage = UsageTable(SINCE, UNTIL, ("namespace", "job"),
                           rows={("team.a", "post-build"): a1, ("team.a", "pull-build"): a2, ("team.b", ""): b})
    over_time = UsageTable(SINCE, UNTIL, ("day",), rows={("2026-11-03",): Counts(hits=5, misses=1)})
    return build_report(usage=usage, over_time=over_time, stats=_stats(team_a=73, team_b=7.3, team_c=1),
                        prices=PRICES, group_by=group_by)  # type: ignore[arg-type]


def test_the_arithmetic_of_a_worked_example() -> None:
    report = _worked_example("namespace")
    assert report.hours == 240
    rows = {row.namespace: row for row in report.rows}
    a, b, c = rows["team.a"], rows["team.b"], rows["team.c"]
    # team.a: 73 GiB * $0.02 * 240 h / 730 h = $0.48; 200k A * $0.005/1k + 3M B * $0.0004/1k = $1.00 + $1.20;
    # 50 GiB * $0.12 = $6.00; 7.2e9 ms = 2,000 CPU hours * $0.03 = $60; return 60 / 8.68
    assert a.storage_usd == pytest.approx(0.48)
    assert a.operations_usd == pytest.approx(2.2)
    assert a.egress_usd == pytest.approx(6.0)
    assert a.total_usd == pytest.approx(8.68)
    assert a.hit_ratio == pytest.approx(0.9)
    assert a.cpu_hours_saved == pytest.approx(2000)
    assert a.saved_usd == pytest.approx(60)
    assert a.roi == pytest.approx(60 / 8.68)
    # team.b: 7.3 GiB -> $0.048; 10k A -> $0.05, 40k B -> $0.016; nothing sent, nothing saved
    assert (b.storage_usd, b.operations_usd, b.total_usd) == pytest.approx((0.048, 0.066, 0.114))
    assert (b.hit_ratio, b.saved_usd, b.roi) == (0.0, 0.0, 0.0)
    # team.c: stored only (1 GiB -> $0.02 * 240 / 730), never asked for
    assert c.total_usd == pytest.approx(0.02 * 240 / 730)
    assert (c.requests, c.hit_ratio) == (0, None)
    t = report.totals
    assert t.total_usd == pytest.approx(8.68 + 0.114 + 0.02 * 240 / 730) == report.total_usd
    assert t.saved_usd == report.saved_usd == pytest.approx(60)
    assert report.roi == pytest.approx(60 / (8.68 + 0.114 + 0.02 * 240 / 730))
    assert t.hit_ratio == pytest.approx(900_000 / 1_040_000)
    assert [p.start for p in report.series][:3] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert len(report.series) == 10 and (report.series[2].hits, report.series[2].misses) == (5, 1)


def test_per_job_rows_add_up_to_the_same_totals() -> None:
    by_ns, by_job = _worked_example("namespace"), _worked_example("job")
    assert by_job.total_usd == pytest.approx(by_ns.total_usd)
    assert by_job.saved_usd == pytest.approx(by_ns.saved_usd)
    rows = {(row.namespace, row.job): row for row in by_job.rows}
    assert set(rows) == {("team.a", "post-build"), ("team.a", "pull-build"), ("team.a", "(storage)"),
                         ("team.b", "(none)"), ("team.b", "(storage)"), ("team.c", "(storage)")}
    assert rows["team.a", "(storage)"].total_usd == pytest.approx(0.48)
    assert rows["team.a", "pull-build"].storage_usd == 0
    assert rows["team.a", "post-build"].saved_usd == pytest.approx(30)
    # post-build: 150k A -> $0.75, 2M B -> $0.80, 30 GiB -> $3.60
    assert rows["team.a", "post-build"].total_usd == pytest.approx(0.75 + 0.80 + 3.60)


def test_savings_take_the_helpers_reports_where_they_saw_more() -> None:
    served = Counts(hits=10, compute_ms_saved=3_600_000, session_compute_ms_saved=1_800_000)  # 1 h vs 0.5 h
    prefetched = Counts(hits=10, compute_ms_saved=0, session_compute_ms_saved=7_200_000)  # 0 h vs 2 h
    usage = UsageTable(SINCE, UNTIL, ("namespace",), rows={("team.a",): served, ("team.b",): prefetched})
    report = build_report(usage=usage, over_time=UsageTable(SINCE, UNTIL, ("day",)), stats=_stats(),
                          prices=PRICES, group_by="namespace")
    assert [(r.namespace, r.cpu_hours_saved) for r in report.rows] == [("team.a", 1.0), ("team.b", 2.0)]
    assert report.saved_usd == pytest.approx(3 * 0.03)


def test_the_formats_agree() -> None:
    report = _worked_example("job")
    table = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [r["namespace"] for r in table][-1] == "TOTAL"
    assert float(table[-1]["total_usd"]) == pytest.approx(report.total_usd)
    assert sum(float(r["total_usd"]) for r in table[:-1]) == pytest.approx(report.total_usd)
    markdown = to_markdown(report)
    assert "| team.a | post-build | " in markdown and "| **TOTAL** |" in markdown
    assert f"Cost ${report.total_usd:,.2f}, saved $60.00 (2,000 CPU hours)" in markdown
    html = to_html(report)
    assert html.count("<svg") == 3 and "<script" not in html and "http" not in html.replace("http://www.w3.org", "")


def test_a_live_report_prices_the_operations_it_counted(start_cache: Any) -> None:
    # prices that make each unit a round dollar amount: $1 per Class A op, $0.10 per Class B op,
    # $1 per byte sent, $1 per ms of compute saved, and storage at $1 per GiB-hour
    prices = {"storage_gb_month": 730, "class_a_per_1000": 1000, "class_b_per_1000": 100, "egress_gb": GIB,
              "cpu_vcpu_hour": 3_600_000}
    cache: Cache = start_cache({"prices": prices})
    bodies = [os.urandom(2000 + i) for i in range(3)]
    actions = [action_of(f"live {i}") for i in range(3)]
    for action, body in zip(actions, bodies, strict=True):
        assert cache.put("team.live", action, body, compute_ms=400).status_code == 201
    assert cache.put("team.live", actions[0], bodies[0]).status_code == 200
    for i in range(4):
        assert cache.get("team.live", actions[i % 3]).status_code == 200
    assert cache.get("team.live", new_action()).status_code == 404

    report = cache.admin("GET", "/v1/admin/cost-report").json()
    [row] = [r for r in report["rows"] if r["namespace"] == "team.live"]
    stored = cache.admin("GET", "/v1/admin/stats").json()["namespaces"]["team.live"]["stored_bytes"]
    sent = len(bodies[0]) * 2 + len(bodies[1]) + len(bodies[2])
    assert (row["ops_a"], row["ops_b"]) == (3, 3 + 1 + 4 + 1)  # writes; stats, reads
    assert row["operations_usd"] == pytest.approx(3 * 1 + 9 * 0.1)
    assert row["egress_usd"] == pytest.approx(sent)
    assert row["saved_usd"] == pytest.approx(4 * 400)
    assert row["storage_usd"] == pytest.approx(stored / GIB * report["hours"])
    assert row["total_usd"] == pytest.approx(3.9 + sent + stored / GIB * report["hours"])
    assert row["hit_ratio"] == pytest.approx(0.8) and row["roi"] == pytest.approx(1600 / row["total_usd"])
    gate_rows = [r for r in report["rows"] if r["namespace"] == "(gate)"]
    assert report["total_usd"] == pytest.approx(row["total_usd"] + sum(r["total_usd"] for r in gate_rows))

    text = cache.admin("GET", "/v1/admin/cost-report?format=csv")
    assert text.headers["content-type"].startswith("text/csv")
    [csv_row] = [r for r in csv.DictReader(io.StringIO(text.text)) if r["namespace"] == "team.live"]
    assert float(csv_row["saved_usd"]) == pytest.approx(1600)
    markdown = cache.admin("GET", "/v1/admin/cost-report?format=markdown")
    assert markdown.headers["content-type"].startswith("text/markdown") and "| team.live | 3 |" in markdown.text
    html = cache.admin("GET", "/v1/admin/cost-report?format=html")
    assert html.headers["content-type"].startswith("text/html") and html.text.count("<svg") == 3


@pytest.mark.anyio
async def test_labels_from_requests_are_escaped(tmp_path: Path) -> None:
    async with in_process(tmp_path) as gate:
        evil = '<script>alert("job")</script>'
        resp = await gate.client.get(f"/v1/ns/team.x/actions/{new_action()}", headers={"X-Gocachegate-Job": evil})
        assert resp.status_code == 404
        html = (await gate.client.get("/v1/admin/cost-report?format=html&group_by=job")).text
        assert "<script" not in html and "&lt;script&gt;alert(&quot;job&quot;)&lt;/script&gt;" in html
        markdown = (await gate.client.get("/v1/admin/cost-report?format=markdown&group_by=job")).text
        assert '| team.x | &lt;script&gt;alert("job")&lt;/script&gt; |' in markdown
