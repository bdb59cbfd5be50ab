"""The helper's promises when the remote side misbehaves: a miss, a count, never a crash."""

from __future__ import annotations

import hashlib
import json
import select
import time
from pathlib import Path

import zstandard

from tests.helper.driver import Helper, action
from tests.helper.fakegate import Script, Seen, fake_gate

BODY = b"an object file\n" * 200
OUTPUT = hashlib.sha256(BODY).hexdigest()


def hit_headers(output: str = OUTPUT, size: int = len(BODY)) -> dict[str, str]:
    return {"X-Go-Output-Id": output, "X-Go-Size": str(size), "X-Go-Put-Time": "2026-01-02T03:04:05Z"}


def run_gets(tmp_path: Path, script: Script, n: int = 1, **env: str) -> tuple[list[dict[str, object]], dict[str, int]]:
    stats_file = tmp_path / "stats.json"
    with fake_gate(script) as url:
        h = Helper(tmp_path / "l1", GOCACHEGATE_URL=url, GOCACHEGATE_STATS_FILE=str(stats_file), **env)
        answers = []
        for i in range(n):
            h.send("get", action(i))
            answers.append(h.read())
        h.close()
    return answers, json.loads(stats_file.read_text())


def test_remote_hit_plain_and_zstd(tmp_path: Path) -> None:
    packed = zstandard.ZstdCompressor().compress(BODY)

    def answer(seen: Seen) -> tuple[int, dict[str, str], bytes | None]:
        if seen.method == "POST":
            return 202, {}, b"{}"
        if seen.path.endswith(action(0).hex()):
            return 200, hit_headers(), BODY
        return 200, {**hit_headers(), "Content-Encoding": "zstd"}, packed

    answers, stats = run_gets(tmp_path, Script(answer), n=2)
    for a in answers:
        assert Path(str(a["DiskPath"])).read_bytes() == BODY
    assert stats["remote_hits"] == 2 and stats["corrupt"] == 0
    assert stats["bytes_downloaded"] == len(BODY) + len(packed)


def test_corrupt_body_is_a_counted_miss(tmp_path: Path) -> None:
    script = Script(lambda s: (202, {}, b"{}") if s.method == "POST" else (200, hit_headers(), BODY[:-1] + b"X"))
    answers, stats = run_gets(tmp_path, script)
    assert answers[0].get("Miss") is True
    assert stats["corrupt"] == 1 and stats["misses"] == 1 and stats["hits"] == 0
    assert not list((tmp_path / "l1").glob("*/*-d")), "a corrupt body reached L1"


def test_zstd_bomb_is_a_miss(tmp_path: Path) -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
    script = Script(lambda s: (202, {}, b"{}") if s.method == "POST"
                    else (200, {**hit_headers(size=10), "Content-Encoding": "zstd"}, bomb))
    answers, stats = run_gets(tmp_path, script)
    assert answers[0].get("Miss") is True and stats["corrupt"] == 1


def test_truncated_body_is_a_miss(tmp_path: Path) -> None:
    script = Script(lambda s: (202, {}, b"{}") if s.method == "POST" else (200, hit_headers(), None))
    answers, stats = run_gets(tmp_path, script)
    assert answers[0].get("Miss") is True
    assert stats["remote_errors"] == 1 and stats["hits"] == 0


def test_an_error_answer_cut_short_is_a_miss_not_a_lost_get(tmp_path: Path) -> None:
    """A gate killed while it sends a miss (or a refusal, or a 5xx) leaves go's get unanswered
    unless reading that answer's body is a remote failure like any other (seen in CI: a build hung)."""
    for status in (404, 503, 403, 401):
        stats_file = tmp_path / f"stats-{status}.json"
        script = Script(lambda s, status=status: (202, {}, b"{}") if s.method == "POST" else (status, {}, None))
        with fake_gate(script) as url:
            h = Helper(tmp_path / f"l1-{status}", GOCACHEGATE_URL=url, GOCACHEGATE_STATS_FILE=str(stats_file))
            rid = h.send("get", action(0))
            assert h.proc.stdout is not None
            answered, _, _ = select.select([h.proc.stdout], [], [], 10)
            assert answered, f"{status} cut short: go's get was never answered"
            answer = h.read()
            assert answer["ID"] == rid and answer.get("Miss") is True, answer
            h.close()
            assert "Traceback" not in h.stderr(), h.stderr()
        assert json.loads(stats_file.read_text())["misses"] == 1


def test_circuit_opens_after_repeated_5xx(tmp_path: Path) -> None:
    script = Script(lambda s: (503, {"Content-Type": "application/json"}, b'{"error": "storage down"}'))
    answers, stats = run_gets(tmp_path, script, n=10)
    assert all(a.get("Miss") is True for a in answers)
    gets_sent = [s for s in script.seen if s.method == "GET"]
    assert len(gets_sent) == 3, "the circuit should stop asking after three failures"
    assert not [s for s in script.seen if s.method == "POST"], "no session report to a dead gate"
    assert stats["misses"] == 10


def test_401_rereads_the_token_file_once(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token")

    def answer(seen: Seen) -> tuple[int, dict[str, str], bytes | None]:
        if seen.headers.get("Authorization") != "Bearer new-token":
            token_file.write_text("new-token")  # the kubelet rotated it meanwhile
            return 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, b'{"error": "expired"}'
        if seen.method == "POST":
            return 202, {}, b"{}"
        return 200, hit_headers(), BODY

    script = Script(answer)
    answers, _stats = run_gets(tmp_path, script, GOCACHEGATE_TOKEN_FILE=str(token_file))
    assert Path(str(answers[0]["DiskPath"])).read_bytes() == BODY
    assert [s.headers.get("Authorization") for s in script.seen][:2] == ["Bearer old-token", "Bearer new-token"]


def test_401_twice_disables_the_remote(tmp_path: Path) -> None:
    script = Script(lambda s: (401, {}, b'{"error": "bad token"}'))
    answers, _ = run_gets(tmp_path, script, n=5, GOCACHEGATE_TOKEN="nope")
    assert all(a.get("Miss") is True for a in answers)
    assert len(script.seen) == 2, "after a refused refresh the gate is not asked again"


def test_403_on_upload_keeps_puts_local(tmp_path: Path) -> None:
    def answer(seen: Seen) -> tuple[int, dict[str, str], bytes | None]:
        if seen.method == "PUT":
            return 403, {}, b'{"error": "role reader may not write"}'
        return (404, {}, b'{"error": "miss"}') if seen.method == "GET" else (202, {}, b"{}")

    script = Script(answer)
    stats_file = tmp_path / "stats.json"
    with fake_gate(script) as url:
        h = Helper(tmp_path / "l1", GOCACHEGATE_URL=url, GOCACHEGATE_STATS_FILE=str(stats_file))
        h.send("put", action(0), BODY)
        assert h.read()["DiskPath"]
        deadline = time.monotonic() + 10
        while not any(s.method == "PUT" for s in script.seen) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the refusal reaches the helper
        for i in range(1, 5):
            h.send("put", action(i), BODY + bytes([i]))
            assert h.read()["DiskPath"]
        h.close()
        stderr = h.stderr()
    stats = json.loads(stats_file.read_text())
    puts_sent = [s for s in script.seen if s.method == "PUT"]
    assert len(puts_sent) == 1 and stats["puts"] == 5 and stats["uploads"] == 0
    assert stderr.count("read-only") == 1


def test_uploads_carry_digest_size_and_compression(tmp_path: Path) -> None:
    def answer(seen: Seen) -> tuple[int, dict[str, str], bytes | None]:
        if seen.method == "GET":
            return 404, {}, b'{"error": "miss"}'
        return (201, {}, b"{}") if seen.method == "PUT" else (202, {}, b"{}")

    script = Script(answer)
    stats_file = tmp_path / "stats.json"
    with fake_gate(script) as url:
        h = Helper(tmp_path / "l1", GOCACHEGATE_URL=url, GOCACHEGATE_STATS_FILE=str(stats_file),
                   JOB_NAME="post-sample", JOB_TYPE="postsubmit")
        h.send("get", action(1))
        assert h.read()["Miss"] is True
        h.send("put", action(1), BODY)
        h.read()
        h.close()
    put = next(s for s in script.seen if s.method == "PUT")
    assert put.path == f"/v1/ns/default/actions/{action(1).hex()}"
    assert put.headers["X-Go-Output-Id"] == OUTPUT and put.headers["X-Go-Size"] == str(len(BODY))
    assert put.headers["Content-Encoding"] == "zstd"
    assert zstandard.ZstdDecompressor().decompress(put.body) == BODY
    assert int(put.headers["X-Go-Compute-Ms"]) >= 0
    assert put.headers["X-Gocachegate-Job"] == "post-sample"
    session = json.loads(next(s for s in script.seen if s.method == "POST").body)
    assert session["puts"] == 1 and session["uploads"] == 1 and session["job_type"] == "postsubmit"
