"""The manifest key and format (``cacheprog/manifest.py``): the same command in two checkouts of a
repository shares a key; what changes the entries changes it; per-job values do not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cacheprog.manifest import MAX_IDS, ManifestError, Recorder, command_key, decode, encode, normalise_args


def _checkout(root: Path) -> Path:
    """A repository with a module in ``api/``."""
    (root / ".git").mkdir(parents=True)
    (root / "api").mkdir()
    (root / "api" / "go.mod").write_text("module example.com/repo/api\n\ngo 1.24\n")
    (root / "api" / "pkg").mkdir()
    return root


def test_two_checkouts_of_one_repository_share_the_key(tmp_path: Path) -> None:
    a = _checkout(tmp_path / "job1" / "src" / "repo")
    b = _checkout(tmp_path / "job2" / "elsewhere" / "repo")
    env = {"GOFLAGS": "-mod=readonly"}
    key_a = command_key(env, os.getpid(), str(a / "api"))
    key_b = command_key(env, os.getpid(), str(b / "api"))
    assert key_a == key_b
    assert len(key_a.key) == 64 and "module example.com/repo/api" in key_a.description
    assert "dir api" in key_a.description


def test_what_changes_the_entries_changes_the_key(tmp_path: Path) -> None:
    repo = _checkout(tmp_path / "repo")
    base = command_key({}, os.getpid(), str(repo / "api"))
    assert command_key({}, os.getpid(), str(repo / "api" / "pkg")) != base  # another directory
    assert command_key({"GOFLAGS": "-race"}, os.getpid(), str(repo / "api")) != base
    assert command_key({"GOARCH": "arm64"}, os.getpid(), str(repo / "api")) != base
    assert command_key({"CGO_ENABLED": "0"}, os.getpid(), str(repo / "api")) != base


def test_per_job_arguments_are_dropped_and_paths_made_relative(tmp_path: Path) -> None:
    root = str(tmp_path / "repo")
    assert normalise_args(["build", "-o", "/tmp/job1/out", "-p=8", "./..."], root) == ["build", "./..."]
    assert normalise_args(["test", "-coverprofile=/x/c.out", "-ldflags", "-X main.v=abc", "-run", "TestA",
                           f"{root}/cmd/tool"], root) == ["test", "-run", "TestA", "./cmd/tool"]
    assert normalise_args(["vet", root, "/usr/lib/go"], root) == ["vet", ".", "/usr/lib/go"]


def test_the_override_is_the_key(tmp_path: Path) -> None:
    assert command_key({"GOCACHEGATE_MANIFEST_KEY": "unit-tests"}).key == "unit-tests"
    hashed = command_key({"GOCACHEGATE_MANIFEST_KEY": "go test ./... (amd64)"}).key
    assert len(hashed) == 64 and hashed == command_key({"GOCACHEGATE_MANIFEST_KEY": "go test ./... (amd64)"}).key


def test_a_manifest_round_trips_in_order() -> None:
    ids = [os.urandom(32) for _ in range(1000)]
    data = encode(ids, "go build ./...", created=1_700_000_000)
    assert len(data) < 33_000
    stored = decode(data)
    assert stored.ids == ids and stored.created == 1_700_000_000
    assert stored.same(list(reversed(ids)), now=1_700_000_000 + 3600)
    assert not stored.same(ids[:-1], now=1_700_000_000 + 3600)
    assert not stored.same(ids, now=1_700_000_000 + 2 * 86400)  # a day old: sent again
    for bad in (b"", b"GCM0" + data[4:], data[:-1]):
        with pytest.raises(ManifestError):
            decode(bad)
    assert len(decode(encode([b"\0" * 32] * (MAX_IDS + 5), "big")).ids) == MAX_IDS


def test_the_recorder_keeps_first_asked_order_and_only_used_ids() -> None:
    recorder = Recorder()
    a, b, c = (bytes([n]) * 32 for n in (1, 2, 3))
    for action in (a, b, c):
        recorder.asked(action)
    recorder.used(c)
    recorder.used(a)
    recorder.asked(a)
    assert recorder.ids() == [a, c]
