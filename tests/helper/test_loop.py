"""The protocol loop and its workers alone, with a cache that fails: go gets an answer to every
request whatever happens behind it (a get left unanswered hangs the build: seen in CI, where a get's
thread died and the gets queued for it after were never run)."""

from __future__ import annotations

import base64
import functools
import io
import json
import os

import pytest

from cacheprog.l1 import L1Entry
from cacheprog.loop import serve
from cacheprog.workers import Workers


class _BrokenCache:
    """Every get goes to the gate, and asking the gate raises what no code path should."""

    def __init__(self) -> None:
        self.said: dict[str, str] = {}

    def lookup(self, action_id: bytes) -> tuple[L1Entry | None, bool]:
        return None, True

    def fetch(self, action_id: bytes) -> L1Entry | None:
        raise KeyError("a bug")

    def say_once(self, key: str, message: str) -> None:
        self.said.setdefault(key, message)

    def close(self) -> None:
        pass


def test_a_get_that_raises_inside_the_helper_is_answered_as_a_miss() -> None:
    requests = b"".join(
        json.dumps({"ID": i, "Command": "get", "ActionID": base64.b64encode(bytes([i]) * 32).decode()}).encode()
        + b"\n\n" for i in (1, 2, 3))
    requests += json.dumps({"ID": 4, "Command": "close"}).encode() + b"\n"
    cache = _BrokenCache()
    read_end, write_end = os.pipe()
    serve(cache, io.BytesIO(requests), write_end)  # type: ignore[arg-type]
    os.close(write_end)  # /dev/null by now: close puts it in the pipe's place, as go sees the end
    with os.fdopen(read_end, "rb") as out:
        answers = [json.loads(line) for line in out.read().splitlines()]
    assert sorted(a["ID"] for a in answers) == [1, 2, 3, 4]
    assert all(a.get("Miss") is True for a in answers if a["ID"] != 4), answers
    assert list(cache.said) == ["fetch"]
    assert "KeyError: 'a bug'" in cache.said["fetch"] and "answered as a miss" in cache.said["fetch"]


def test_a_failed_task_leaves_its_worker_running_and_is_said_once_per_kind(capsys: pytest.CaptureFixture[str]) -> None:
    workers = Workers("get", 1)  # one thread: the next tasks can only run on the one whose task failed
    done: list[int] = []

    def fail(exc: Exception) -> None:
        raise exc

    for exc in (KeyError("a bug"), KeyError("the same bug again"), ValueError("another bug")):
        workers.submit(functools.partial(fail, exc))
    for i in range(3):
        workers.submit(functools.partial(done.append, i))
    assert workers.drain(10) == 0
    assert done == [0, 1, 2]
    assert capsys.readouterr().err == (  # each kind of failure once, not once per task
        "gocacheprog: a get task failed: KeyError: 'a bug' (said once per kind)\n"
        "gocacheprog: a get task failed: ValueError: another bug (said once per kind)\n")
