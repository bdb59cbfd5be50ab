"""The admin API on a real gate, on both backends: who may call it, what it lists and counts, how it
pages, how it refuses bad input, and that its OpenAPI schema describes what it answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from tests.admin.conftest import READER, WRITER, Cache, action_of, bearer

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/admin/stats", None),
    ("GET", "/v1/admin/entries?ns=team.a", None),
    ("GET", f"/v1/admin/entries/team.a/{action_of('x')}", None),
    ("DELETE", f"/v1/admin/entries/team.a/{action_of('x')}", None),
    ("POST", "/v1/admin/purge", {"namespace": "team.a", "dry_run": True}),
    ("GET", "/v1/admin/manifests", None),
    ("GET", "/v1/admin/manifests/team.a/go-build", None),
    ("DELETE", "/v1/admin/manifests/team.a/go-build", None),
    ("GET", "/v1/admin/usage", None),
    ("POST", "/v1/admin/usage/compact", {"older_than": "30d"}),
    ("GET", "/v1/admin/cost-report", None),
    ("GET", "/v1/admin/cost-report?format=html", None),
    ("GET", "/v1/admin/openapi.json", None),
]


def fill(cache: Cache) -> dict[str, dict[str, bytes]]:
    """Five entries in team.a and three in team.b, of different sizes; returns ns -> action -> body."""
    stored: dict[str, dict[str, bytes]] = {"team.a": {}, "team.b": {}}
    for ns, count in (("team.a", 5), ("team.b", 3)):
        for i in range(count):
            action, body = action_of(f"{ns} {i}"), bytes([i]) * (700 + 300 * i)
            assert cache.put(ns, action, body, compute_ms=100 * (i + 1)).status_code == 201
            stored[ns][action] = body
    return stored


def test_only_admins_pass(cache: Cache) -> None:
    for method, path, body in ROUTES:
        assert cache.admin(method, path, token=None, json=body).status_code == 401, path
        for token in (READER, WRITER):
            resp = cache.admin(method, path, token=token, json=body)
            assert resp.status_code == 403 and "is not admin" in resp.json()["error"], (path, token)
        resp = cache.admin(method, path, json=body)
        assert resp.status_code in (200, 204, 404), (path, resp.text)


def test_stats_list_show_delete(cache: Cache) -> None:
    stored = fill(cache)
    stats = cache.admin("GET", "/v1/admin/stats").json()
    assert stats["entries"] == 8
    for ns, entries in stored.items():
        mine = stats["namespaces"][ns]
        assert mine["entries"] == len(entries)
        assert mine["bytes"] == sum(len(b) for b in entries.values())
        assert 0 < mine["stored_bytes"] < mine["bytes"] + 400 * len(entries)  # frames; repeated bytes compress
    assert stats["bytes"] == sum(s["bytes"] for s in stats["namespaces"].values())

    # pages of two: every entry once, in key order, the token carried over
    seen: list[str] = []
    token = None
    while True:
        query = "/v1/admin/entries?ns=team.a&limit=2" + (f"&page_token={token}" if token else "")
        page = cache.admin("GET", query).json()
        assert len(page["entries"]) <= 2
        seen += [e["action_id"] for e in page["entries"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == sorted(stored["team.a"])

    first = sorted(stored["team.b"])[0]
    by_prefix = cache.admin("GET", f"/v1/admin/entries?prefix={first[:6]}").json()  # across namespaces
    assert [e["action_id"] for e in by_prefix["entries"]] == [first]
    assert cache.admin("GET", f"/v1/admin/entries?ns=team.b&prefix={first[:1]}").json()["entries"][0][
        "action_id"
    ] == first
    assert cache.admin("GET", "/v1/admin/entries?ns=nobody.here").json() == {"entries": [], "next_page_token": None}

    entry = cache.admin("GET", f"/v1/admin/entries/team.b/{first}").json()
    assert entry["namespace"] == "team.b" and entry["writer"] == "ci-writer"
    assert entry["size"] == len(stored["team.b"][first]) and entry["output_id"]
    assert entry["compute_ms"] in (100, 200, 300) and entry["put_time"].endswith("Z") and entry["last_used"]
    assert cache.admin("DELETE", f"/v1/admin/entries/team.b/{first}").status_code == 204
    assert cache.admin("GET", f"/v1/admin/entries/team.b/{first}").status_code == 404
    assert cache.admin("DELETE", f"/v1/admin/entries/team.b/{first}").status_code == 404
    assert cache.get("team.b", first).status_code == 404
    assert cache.admin("GET", "/v1/admin/stats").json()["namespaces"]["team.b"]["entries"] == 2


def test_manifests_listed_shown_deleted(cache: Cache) -> None:
    cache.put_manifest("team.a", "go-build", 3, "go go1.26.8\nargs build ./...")
    cache.put_manifest("team.a", "go-test", 5, "go go1.26.8\nargs test ./...")
    cache.put_manifest("team.b", "go-test", 2, "go go1.26.8\nargs test ./...")
    fill(cache)  # entries are not manifests, and manifests are not entries
    assert cache.admin("GET", "/v1/admin/stats").json()["entries"] == 8

    listed = cache.admin("GET", "/v1/admin/manifests").json()
    assert [(m["namespace"], m["key"], m["ids"]) for m in listed["manifests"]] == [
        ("team.a", "go-build", 3), ("team.a", "go-test", 5), ("team.b", "go-test", 2)]
    assert listed["next_page_token"] is None
    first = listed["manifests"][0]
    assert first["writer"] == "ci-writer" and first["put_time"].endswith("Z") and first["stored_size"] > 3 * 32

    seen: list[str] = []  # pages of one, the token carried over
    token = None
    while True:
        page = cache.admin("GET", "/v1/admin/manifests?ns=team.a&limit=1" + (f"&page_token={token}" if token else ""))
        seen += [m["key"] for m in page.json()["manifests"]]
        token = page.json()["next_page_token"]
        if token is None:
            break
    assert seen == ["go-build", "go-test"]
    assert cache.admin("GET", "/v1/admin/manifests?ns=nobody.here").json() == {"manifests": [], "next_page_token": None}

    shown = cache.admin("GET", "/v1/admin/manifests/team.a/go-test").json()
    assert shown["ids"] == 5 and shown["description"] == "go go1.26.8\nargs test ./..."
    created = datetime.fromisoformat(shown["created"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - created).total_seconds()) < 120  # the helper's own clock, in the header

    assert cache.admin("DELETE", "/v1/admin/manifests/team.a/go-test").status_code == 204
    assert cache.admin("GET", "/v1/admin/manifests/team.a/go-test").status_code == 404
    assert cache.admin("DELETE", "/v1/admin/manifests/team.a/go-test").status_code == 404
    gone = httpx.get(f"{cache.url}/v1/ns/team.a/manifests/go-test", headers=bearer(READER), timeout=30)
    assert gone.status_code == 404  # the next job of that command prefetches nothing, and writes it anew
    assert [m["key"] for m in cache.admin("GET", "/v1/admin/manifests?ns=team.a").json()["manifests"]] == ["go-build"]
    assert cache.admin("GET", "/v1/admin/stats").json()["entries"] == 8


def test_a_manifest_page_token_is_bound_to_its_listing(cache: Cache) -> None:
    for key in ("k1", "k2"):
        cache.put_manifest("team.a", key, 1, key)
    token = cache.admin("GET", "/v1/admin/manifests?ns=team.a&limit=1").json()["next_page_token"]
    assert token
    for other in (f"manifests?ns=team.b&page_token={token}", f"entries?ns=team.a&page_token={token}"):
        resp = cache.admin("GET", f"/v1/admin/{other}")
        assert resp.status_code == 400 and "another listing" in resp.json()["error"], resp.text


BAD_INPUT: list[tuple[str, str, Any, str]] = [
    ("GET", "/v1/admin/entries?limit=0", None, "limit"),
    ("GET", "/v1/admin/entries?limit=1001", None, "limit"),
    ("GET", "/v1/admin/entries?limit=many", None, "limit"),
    ("GET", "/v1/admin/entries?page_token=bm90IGEgdG9rZW4=", None, "page_token"),
    ("GET", "/v1/admin/entries?ns=..", None, "bad namespace"),
    ("GET", "/v1/admin/entries?prefix=XYZ", None, "bad prefix"),
    ("GET", f"/v1/admin/entries/team.a/{'A' * 64}", None, "bad action id"),
    ("GET", "/v1/admin/manifests?ns=..", None, "bad namespace"),
    ("GET", "/v1/admin/manifests?limit=0", None, "limit"),
    ("GET", "/v1/admin/manifests?page_token=bm90IGEgdG9rZW4=", None, "page_token"),
    ("GET", "/v1/admin/manifests/team.a/.hidden", None, "bad manifest key"),
    ("DELETE", "/v1/admin/manifests/.x/go-test", None, "bad namespace"),
    ("POST", "/v1/admin/purge", {"namespace": "team.a", "older_than": "7x"}, "older_than"),
    ("POST", "/v1/admin/purge", {"namespace": "team.a", "older_than": "-1d"}, "older_than"),
    ("POST", "/v1/admin/purge", {}, "refusing to purge every entry"),
    ("POST", "/v1/admin/purge", {"namespace": "team.a", "colour": "red"}, "colour"),
    ("POST", "/v1/admin/purge", {"namespace": "team.a", "limit": 0}, "limit"),
    ("GET", "/v1/admin/usage?since=yesterday", None, "since"),
    ("GET", "/v1/admin/usage?since=now&until=7d", None, "until must be later"),
    ("GET", "/v1/admin/usage?group_by=colour", None, "group_by"),
    ("GET", "/v1/admin/cost-report?format=pdf", None, "format"),
    ("GET", "/v1/admin/cost-report?group_by=subject", None, "group_by"),
    ("POST", "/v1/admin/usage/compact", {"older_than": "1h"}, "older than 2 days"),
]


def test_bad_input_is_400_with_the_reason(cache: Cache) -> None:
    for method, path, body, reason in BAD_INPUT:
        resp = cache.admin(method, path, json=body)
        assert resp.status_code == 400, (path, body, resp.text)
        assert reason in resp.json()["error"], (path, body, resp.text)


def test_a_page_token_is_bound_to_its_listing(cache: Cache) -> None:
    fill(cache)
    token = cache.admin("GET", "/v1/admin/entries?ns=team.a&limit=1").json()["next_page_token"]
    assert token
    assert cache.admin("GET", f"/v1/admin/entries?ns=team.a&limit=1&page_token={token}").status_code == 200
    for other in (f"ns=team.b&page_token={token}", f"page_token={token}", f"ns=team.a&prefix=a&page_token={token}"):
        resp = cache.admin("GET", f"/v1/admin/entries?{other}")
        assert resp.status_code == 400 and "another listing" in resp.json()["error"]
    resp = cache.admin("POST", "/v1/admin/purge", json={"namespace": "team.a", "dry_run": True, "page_token": token})
    assert resp.status_code == 400


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _answer_schema(schema: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    content = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]
    return _resolve(schema, content["schema"])


def test_the_openapi_schema_describes_the_answers(cache: Cache) -> None:
    fill(cache)
    cache.put_manifest("team.a", "go-test", 2, "args test ./...")
    schema = cache.admin("GET", "/v1/admin/openapi.json").json()
    expected = {
        ("/v1/admin/stats", "get"): cache.admin("GET", "/v1/admin/stats").json(),
        ("/v1/admin/entries", "get"): cache.admin("GET", "/v1/admin/entries?limit=1").json(),
        ("/v1/admin/entries/{ns}/{action}", "get"): cache.admin(
            "GET", f"/v1/admin/entries/team.a/{action_of('team.a 0')}"
        ).json(),
        ("/v1/admin/purge", "post"): cache.admin("POST", "/v1/admin/purge", json={"prefix": "f", "dry_run": True})
        .json(),
        ("/v1/admin/manifests", "get"): cache.admin("GET", "/v1/admin/manifests").json(),
        ("/v1/admin/manifests/{ns}/{key}", "get"): cache.admin("GET", "/v1/admin/manifests/team.a/go-test").json(),
        ("/v1/admin/usage", "get"): cache.admin("GET", "/v1/admin/usage").json(),
        ("/v1/admin/cost-report", "get"): cache.admin("GET", "/v1/admin/cost-report").json(),
    }
    for (path, method), answer in expected.items():
        described = _answer_schema(schema, path, method)
        assert set(described["properties"]) == set(answer), path
        assert set(described.get("required", [])) <= set(answer), path
    rows = _resolve(schema, _answer_schema(schema, "/v1/admin/usage", "get")["properties"]["rows"]["items"])
    assert set(rows["properties"]) == set(expected["/v1/admin/usage", "get"]["totals"])
    entry = _resolve(schema, _answer_schema(schema, "/v1/admin/entries", "get")["properties"]["entries"]["items"])
    assert set(entry["properties"]) == set(expected["/v1/admin/entries", "get"]["entries"][0])
    assert "delete" in schema["paths"]["/v1/admin/entries/{ns}/{action}"]
    listing = _answer_schema(schema, "/v1/admin/manifests", "get")
    manifest = _resolve(schema, listing["properties"]["manifests"]["items"])
    assert set(manifest["properties"]) == set(expected["/v1/admin/manifests", "get"]["manifests"][0])
    assert "delete" in schema["paths"]["/v1/admin/manifests/{ns}/{key}"]
    assert {"text/csv", "text/html", "text/markdown"} <= {
        kind.split(";")[0] for kind in schema["paths"]["/v1/admin/cost-report"]["get"]["responses"]["200"]["content"]
    }
