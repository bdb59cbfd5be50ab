"""Purges on a real gate, on both backends: what is old goes, what is newer stays, a repeat deletes
nothing more, a dry run deletes nothing, and a large purge goes on from where a call stopped."""

from __future__ import annotations

from tests.admin.conftest import Backend, Cache, action_of


def _listed(cache: Cache, namespace: str) -> set[str]:
    page = cache.admin("GET", f"/v1/admin/entries?ns={namespace}&limit=1000").json()
    assert page["next_page_token"] is None
    return {e["action_id"] for e in page["entries"]}


def test_purge_keeps_what_is_newer_and_is_idempotent(cache: Cache, backend: Backend) -> None:
    bodies = {action_of(f"p {i}"): bytes([i]) * (1000 + i) for i in range(6)}
    for action, body in bodies.items():
        assert cache.put("team.p", action, body).status_code == 201
    other = action_of("q 0")
    assert cache.put("team.q", other, b"q" * 900).status_code == 201
    old = sorted(bodies)[:3]
    for action in old:
        backend.age(cache.gate, "team.p", action, days=10)
    backend.age(cache.gate, "team.q", other, days=10)  # old too, but outside the namespace purged
    recent = sorted(bodies)[3]
    backend.age(cache.gate, "team.p", recent, days=6)  # used 6 days ago: newer than 7d

    request = {"namespace": "team.p", "older_than": "7d", "dry_run": True}
    dry = cache.admin("POST", "/v1/admin/purge", json=request).json()
    assert dry == {
        "deleted": 3,
        "bytes": sum(len(bodies[a]) for a in old),
        "stored_bytes": dry["stored_bytes"],
        "scanned": 6,
        "dry_run": True,
        "next_page_token": None,
    }
    assert dry["stored_bytes"] > 0
    assert _listed(cache, "team.p") == set(bodies)

    done = cache.admin("POST", "/v1/admin/purge", json={**request, "dry_run": False}).json()
    assert {k: done[k] for k in ("deleted", "bytes", "stored_bytes", "scanned")} == {
        k: dry[k] for k in ("deleted", "bytes", "stored_bytes", "scanned")
    }
    assert _listed(cache, "team.p") == set(bodies) - set(old)
    assert _listed(cache, "team.q") == {other}
    for action in old:
        assert cache.get("team.p", action).status_code == 404
    assert cache.get("team.p", recent).content == bodies[recent]

    again = cache.admin("POST", "/v1/admin/purge", json={**request, "dry_run": False}).json()
    assert (again["deleted"], again["bytes"], again["scanned"]) == (0, 0, 3)


def test_purge_by_prefix_across_namespaces(cache: Cache) -> None:
    actions = {ns: [action_of(f"{ns} {i}") for i in range(4)] for ns in ("team.x", "team.y")}
    for ns, listed in actions.items():
        for action in listed:
            assert cache.put(ns, action, action.encode()).status_code == 201
    target = actions["team.y"][2]
    done = cache.admin("POST", "/v1/admin/purge", json={"prefix": target[:8]}).json()
    assert done["deleted"] == 1 and done["bytes"] == 64
    assert _listed(cache, "team.y") == set(actions["team.y"]) - {target}
    assert _listed(cache, "team.x") == set(actions["team.x"])


def test_a_large_purge_goes_on_from_its_page_token(cache: Cache) -> None:
    actions = [action_of(f"big {i}") for i in range(23)]
    for action in actions:
        assert cache.put("team.big", action, action.encode()).status_code == 201
    request = {"namespace": "team.big", "limit": 10}
    calls, deleted, token = 0, 0, None
    while True:
        answer = cache.admin("POST", "/v1/admin/purge", json={**request, "page_token": token}).json()
        calls += 1
        assert answer["scanned"] <= 10
        deleted += answer["deleted"]
        token = answer["next_page_token"]
        if token is None:
            break
    assert (calls, deleted) == (3, 23)
    assert _listed(cache, "team.big") == set()
    assert cache.admin("GET", "/v1/admin/stats").json()["namespaces"] == {}
