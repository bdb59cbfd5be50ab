"""``gocachegate admin ...`` as a subprocess against a live gate: tables for people, JSON for scripts,
one-line errors and exit codes 0 (done), 1 (refused, not found, unreachable), 2 (bad usage)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.admin.conftest import ADMIN, AUTH, READER, Cache, action_of
from tests.conftest import StartGate
from tests.gatefixture import free_port, gate_command, merge_config


@pytest.fixture
def live(gate_factory: StartGate, tmp_path: Path) -> Cache:
    storage = {"storage": {"backend": "local", "path": str(tmp_path / "storage"), "fsync": False}}
    cache = Cache(gate_factory(merge_config(storage, AUTH)))
    for ns, count in (("team.a", 4), ("team.b", 3)):
        for i in range(count):
            body = os.urandom(3000 * (i + 1))
            assert cache.put(ns, action_of(f"{ns} {i}"), body, compute_ms=1500, job="ci-build").status_code == 201
            assert cache.get(ns, action_of(f"{ns} {i}"), job="ci-build").status_code == 200
    return cache


def admin(
    cache: Cache | None, *args: str, token: str | None = ADMIN, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GOCACHEGATE_")}
    if cache is not None:
        environment["GOCACHEGATE_URL"] = cache.url
    if token is not None:
        environment["GOCACHEGATE_TOKEN"] = token
    environment.update(env or {})
    return subprocess.run(
        gate_command("admin", *args), capture_output=True, text=True, env=environment, timeout=60, check=False
    )


def one_line_error(result: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert result.stderr.startswith("gocachegate admin: ") and result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr and "Traceback" not in result.stderr


def test_stats_ls_show_rm(live: Cache) -> None:
    stats = admin(live, "stats")
    assert stats.returncode == 0, stats.stderr
    lines = stats.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "ENTRIES", "SIZE", "STORED"]
    assert lines[1].split()[:4] == ["team.a", "4", "29.3", "KiB"]  # 3000 * (1 + 2 + 3 + 4) bytes
    assert lines[-1].split()[:2] == ["TOTAL", "7"]
    assert json.loads(admin(live, "stats", "--json").stdout)["namespaces"]["team.b"]["entries"] == 3

    ls = admin(live, "ls", "--ns", "team.a", "--limit", "3")
    assert ls.returncode == 0 and len(ls.stdout.splitlines()) == 4 and "raise --limit" in ls.stderr
    assert "1.5s" in ls.stdout.splitlines()[1]  # compute time
    listed = json.loads(admin(live, "ls", "--limit", "1000", "--json").stdout)
    assert len(listed["entries"]) == 7 and listed["next_page_token"] is None

    action = action_of("team.b 1")
    show = admin(live, "show", "team.b", action)
    assert show.returncode == 0 and f"action_id    {action}" in show.stdout and "5.86 KiB (6,000 bytes)" in show.stdout
    assert json.loads(admin(live, "show", "team.b", action, "--json").stdout)["writer"] == "ci-writer"
    assert admin(live, "rm", "team.b", action).stdout == f"deleted team.b/{action}\n"
    one_line_error(admin(live, "show", "team.b", action), 1, "404 not found: no such entry")
    one_line_error(admin(live, "rm", "team.b", action), 1, "404")
    one_line_error(admin(live, "show", "team.b", "abc"), 2, "bad action id")


def test_manifests_show_manifest_rm_manifest(live: Cache) -> None:
    none = admin(live, "manifests")
    assert none.returncode == 0 and none.stdout == "" and none.stderr == "no manifests\n"
    for ns, key, ids in (("team.a", "go-build", 1200), ("team.a", "go-test", 3), ("team.b", "go-vet", 7)):
        live.put_manifest(ns, key, ids, f"go go1.26.8\nmodule example.com/{ns}\nargs {key.removeprefix('go-')} ./...")

    listed = admin(live, "manifests")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "KEY", "IDS", "STORED", "PUT", "WRITER"]
    assert lines[1].split()[:3] == ["team.a", "go-build", "1,200"] and lines[1].split()[-1] == "ci-writer"
    assert [line.split()[1] for line in lines[1:]] == ["go-build", "go-test", "go-vet"]
    some = admin(live, "manifests", "--ns", "team.a", "--limit", "1")
    assert len(some.stdout.splitlines()) == 2 and "raise --limit" in some.stderr
    scripted = json.loads(admin(live, "manifests", "--ns", "team.b", "--json").stdout)
    assert [m["key"] for m in scripted["manifests"]] == ["go-vet"] and scripted["next_page_token"] is None

    shown = admin(live, "show-manifest", "team.a", "go-test")
    assert shown.returncode == 0, shown.stderr
    assert "ids          3\n" in shown.stdout and shown.stdout.endswith(
        "description:\n  go go1.26.8\n  module example.com/team.a\n  args test ./...\n")
    assert json.loads(admin(live, "show-manifest", "team.b", "go-vet", "--json").stdout)["ids"] == 7

    assert admin(live, "rm-manifest", "team.a", "go-test").stdout == "deleted the manifest team.a/go-test\n"
    one_line_error(admin(live, "show-manifest", "team.a", "go-test"), 1, "404 not found: no such manifest")
    one_line_error(admin(live, "rm-manifest", "team.a", "go-test"), 1, "404")
    one_line_error(admin(live, "show-manifest", "team.a", ".x"), 2, "bad manifest key")
    one_line_error(admin(live, "manifests", token=READER), 1, "403 forbidden: role reader is not admin")


def test_purge_shows_progress(live: Cache) -> None:
    dry = admin(live, "purge", "--ns", "team.a", "--older-than", "1d", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would delete 0 entries")
    done = admin(live, "purge", "--ns", "team.a", "--batch", "1")
    assert done.returncode == 0, done.stderr
    progress = done.stderr.splitlines()
    assert len(progress) == 3 and progress[0].startswith("... looked at 1, deleted 1")
    assert re.fullmatch(r"deleted 4 entries, 29.3 KiB \(\d+\.\d KiB stored\), of 4 looked at\n", done.stdout)
    again = json.loads(admin(live, "purge", "--ns", "team.a", "--json").stdout)
    assert (again["deleted"], again["scanned"]) == (0, 0)
    one_line_error(admin(live, "purge", "--ns", "team.a", "--older-than", "3x"), 2, "older_than: bad duration")
    one_line_error(admin(live, "purge"), 2, "refusing to purge every entry")


def test_usage_and_cost_report(live: Cache, tmp_path: Path) -> None:
    usage = admin(live, "usage", "--group-by", "namespace,job")
    assert usage.returncode == 0, usage.stderr
    rows = {tuple(line.split()[:2]): line.split() for line in usage.stdout.splitlines()[1:]}
    assert rows["team.a", "ci-build"][2:5] == ["8", "4", "0"]  # requests, hits, misses
    assert json.loads(admin(live, "usage", "--json", "--since", "1h").stdout)["totals"]["hits"] == 7

    markdown = admin(live, "cost-report")
    assert markdown.returncode == 0 and markdown.stdout.startswith("# gocachegate cost report")
    assert "| team.a | 4 |" in markdown.stdout
    report = json.loads(admin(live, "cost-report", "--json").stdout)
    assert report["total_usd"] > 0 and {r["namespace"] for r in report["rows"]} >= {"team.a", "team.b"}
    target = tmp_path / "report.csv"
    written = admin(live, "cost-report", "--format", "csv", "--group-by", "job", "-o", str(target))
    assert written.returncode == 0 and written.stdout == "" and "wrote" in written.stderr
    table = list(csv.DictReader(io.StringIO(target.read_text())))
    assert ("team.a", "ci-build") in {(r["namespace"], r["job"]) for r in table} and table[-1]["namespace"] == "TOTAL"
    page = tmp_path / "report.html"
    assert admin(live, "cost-report", "--format", "html", "-o", str(page)).returncode == 0
    assert page.read_text().count("<svg") == 3
    one_line_error(admin(live, "usage", "--since", "yesterday"), 2, "since: bad time")


def test_errors_are_one_line_with_their_exit_status(live: Cache, tmp_path: Path) -> None:
    one_line_error(admin(live, "stats", token=None), 1, "401 unauthorized: missing bearer token (set GOCACHEGATE")
    one_line_error(admin(live, "stats", token=READER), 1, "403 forbidden: role reader is not admin")
    unreachable = f"http://127.0.0.1:{free_port()}"
    one_line_error(admin(live, "stats", "--url", unreachable), 1, f"cannot reach the gate at {unreachable}")
    one_line_error(admin(None, "stats", env={"GOCACHEGATE_URL": unreachable}), 1, "cannot reach")

    token_file = tmp_path / "token"
    token_file.write_text(ADMIN + "\n")
    assert admin(live, "stats", token=None, env={"GOCACHEGATE_TOKEN_FILE": str(token_file)}).returncode == 0
    missing = {"GOCACHEGATE_TOKEN_FILE": str(tmp_path / "absent")}
    one_line_error(admin(live, "stats", token=None, env=missing), 2, "cannot read GOCACHEGATE_TOKEN_FILE")

    usage = admin(live, "ls", "--limit", "0")
    assert usage.returncode == 2 and "--limit: want a positive number" in usage.stderr
    assert admin(live, "cost-report", "--format", "pdf").returncode == 2
