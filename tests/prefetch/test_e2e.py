"""The real go command, the helper and a real gate, on both backends: manifests written by writers
only, a fresh machine served by the prefetch, and a missing manifest, a stale one, a gate that dies
mid-stream and a corrupt entry in the stream, each leaving the build correct. ``gocacheprog warm``
lands a command's manifest before go runs it, under the key the helper then works out, and a
build that starts while a warm still lands follows it instead of streaming the same entries."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from cacheprog import warming
from cacheprog.manifest import decode, encode
from tests.emulator import Emulator, start_emulator
from tests.gate.conftest import token_config
from tests.gatefixture import GateProcess, start_gate
from tests.gohelpers import GoRun, Machine, go_binary, helper_binary, write_module
from tests.prefetch.cutproxy import cutting_proxy

pytestmark = pytest.mark.go

NS = "team.repo"
TOKENS = token_config(
    ("reader-token", "ci:presubmit", "reader", ["team.*"]),
    ("writer-token", "ci:postsubmit", "writer", ["team.*"]),
)


class Setup:
    """A gate on one backend, filled by a writer's cold build of the sample repository."""

    def __init__(self, backend: str, gate: GateProcess, tmp: Path, keys: Callable[[], list[str]]) -> None:
        self.backend = backend
        self.gate = gate
        self.tmp = tmp
        self.keys = keys  # the manifest keys stored in the namespace, from the backend's own listing
        self.repo = tmp / "ci" / "job1" / "repo"
        self.count = 0
        self.emulator: Emulator | None = None
        self.writer_key = ""  # the key of the writer's manifest (tests may store others beside it)

    def writer_manifest(self) -> bytes:
        return self.manifests()[self.writer_key]

    def checkout(self, name: str) -> Path:
        """A clone of the repository at a path of its own, as another CI job has it."""
        clone = self.tmp / "ci" / name / "src" / "repo"
        shutil.copytree(self.repo, clone)
        return clone

    def machine(self, token: str, **env: str) -> Machine:
        self.count += 1
        return Machine(self.tmp / f"machine{self.count}", self.gate.url, GOCACHEGATE_NAMESPACE=NS,
                       GOCACHEGATE_TOKEN=token, **env)

    def build(self, machine: Machine, repo: Path | None = None) -> GoRun:
        """``go build -trimpath``: without it the checkout's path is in every action id of the module."""
        return machine.go("build", "-trimpath", "-o", str(machine.root / "app"), ".",
                          cwd=(repo or self.repo) / "app").check()

    def manifests(self) -> dict[str, bytes]:
        """Every manifest of the namespace, read through the API as a reader."""
        out = {}
        for key in self.keys():
            request = urllib.request.Request(f"{self.gate.url}/v1/ns/{NS}/manifests/{key}",
                                             headers={"Authorization": "Bearer reader-token"})
            with urllib.request.urlopen(request, timeout=10) as response:
                out[key] = response.read()
        return out

    def requests(self, route: str, code: int) -> float:
        with urllib.request.urlopen(f"{self.gate.url}/metrics", timeout=10) as response:
            lines = response.read().decode().splitlines()
        series = f'gocachegate_requests_total{{code="{code}",route="{route}"}}'
        return sum(float(line.split()[-1]) for line in lines if line.startswith(series))


def _sha(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


@pytest.fixture(scope="module", params=["local", "gcs"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp(f"prefetch-{request.param}")
    with ExitStack() as stack:
        config: dict[str, object] = dict(TOKENS)
        env = None
        if request.param == "gcs":
            request.applymarker(pytest.mark.gcs)
            emulator = stack.enter_context(start_emulator())
            config["storage"] = {"backend": "gcs", "bucket": emulator.bucket}
            env = emulator.env()
        gate = stack.enter_context(start_gate(tmp / "gate", config, env=env))
        if request.param == "gcs":
            prefix = f"manifests/{NS}/"
            setup = Setup("gcs", gate, tmp, lambda: [n.removeprefix(prefix) for n in emulator.object_names(prefix)])
            setup.emulator = emulator
        else:
            root = gate.storage_path / "manifests" / NS
            setup = Setup("local", gate, tmp, lambda: sorted(p.name for p in root.iterdir()) if root.is_dir() else [])
        write_module(setup.repo / "app", packages=4)
        (setup.repo / ".git").mkdir()
        cold = setup.build(setup.machine("writer-token"))
        assert cold.stats["manifests_sent"] == 1 and cold.stats["prefetched"] == 0, cold.stats
        assert cold.stats["uploads"] == cold.stats["puts"], cold.stats
        (setup.writer_key,) = setup.keys()
        yield setup


def test_a_reader_in_another_checkout_is_served_by_the_prefetch(setup: Setup) -> None:
    before = setup.manifests()
    ids = decode(before[setup.writer_key]).ids
    stored = setup.requests("put_manifest", 204)
    assert stored >= 1  # the writer's (and any a test stored beside it)

    def reads() -> int:
        return 0 if setup.emulator is None else sum(
            1 for r in setup.emulator.requests() if r.kind == "media" and r.status == 200)

    reads_before = reads()
    reader = setup.machine("reader-token")
    clone = setup.checkout("job2")
    run = setup.build(reader, clone)
    s = run.stats
    assert s["prefetched"] > 0 and s["prefetch_bytes"] > 0 and s["corrupt"] == 0 and s["remote_errors"] == 0, s
    assert s["local_hits"] == 0 and s["remote_hits"] >= 0.9 * s["gets"], s
    assert s["prefetch_hits"] >= 0.9 * s["remote_hits"], s  # the build's gets came from the stream
    assert s["prefetched"] == s["prefetch_hits"] + s["prefetch_wasted"] <= len(ids), s
    assert _sha(reader.root / "app") == _sha(setup.tmp / "machine1" / "app")
    # The reader's ids differ (a warm build asks for other ids than a cold one), but a reader's
    # manifest is never stored (its upload was refused, so it did not even try): the writer's stays.
    assert s["manifests_sent"] == 0
    assert setup.requests("put_manifest", 204) == stored
    assert setup.manifests() == before
    if setup.emulator is not None:  # one GCS read per entry, streamed or fetched alone (and one for the manifest)
        expected = 1 + s["prefetched"] + s["remote_hits"] - s["prefetch_hits"]
        assert expected <= reads() - reads_before <= expected + 2, s  # + the gate's own (usage ledger) reads

    # The next go command of the job shares the L1: the prefetch asks only for what L1 lacks (the
    # entries the first one held in memory and never used).
    again = setup.build(reader, clone).stats
    assert again["local_hits"] == again["gets"] and again["prefetch_hits"] == 0, again
    assert again["prefetched"] <= s["prefetch_wasted"] and again["prefetch_bytes"] < s["prefetch_bytes"] / 4, again


def test_the_verbose_line_names_the_manifest_key_the_gate_stores(setup: Setup) -> None:
    run = setup.build(setup.machine("reader-token", GOCACHEGATE_VERBOSE="1"), setup.checkout("job-verbose"))
    (line,) = [text for text in run.stderr.splitlines() if text.startswith("gocacheprog: ") and " gets, " in text]
    s = run.stats
    assert line.startswith(f"gocacheprog: {s['gets']} gets, {s['hits']} hits ({s['local_hits']} local, "), line
    assert f", prefetched {s['prefetched']} ({s['prefetch_hits']} used, " in line, line
    assert line.endswith(f", manifest {setup.writer_key}"), line  # a reader reads the writer's: same command


def test_the_landing_child_is_gone_with_go_and_leaves_no_lock_or_temp_file(setup: Setup) -> None:
    reader = setup.machine("reader-token")
    s = setup.build(reader, setup.checkout("job4")).stats
    assert s["prefetch_hits"] >= 0.9 * s["remote_hits"] > 0, s
    assert s["prefetched"] > 0  # the child landed the manifest, holding the landing lock ...
    assert not list(reader.l1.glob("warming-*.lock"))  # ... and removed it before go returned
    assert not list(reader.l1.glob("*/.tmp-*"))


def test_without_a_child_process_the_helper_s_threads_land_the_manifest(setup: Setup) -> None:
    reader = setup.machine("reader-token", GOCACHEGATE_PREFETCH_PROCESS="0")
    s = setup.build(reader, setup.checkout("job5")).stats
    assert s["prefetched"] > 0 and s["local_hits"] == 0 and s["remote_hits"] >= 0.9 * s["gets"], s
    assert s["prefetch_hits"] >= 0.9 * s["remote_hits"], s
    assert not list(reader.l1.glob("warming-*.lock"))


def test_without_a_manifest_the_build_goes_the_normal_way(setup: Setup) -> None:
    reader = setup.machine("reader-token", GOCACHEGATE_MANIFEST_KEY="never-written")
    s = setup.build(reader).stats
    assert s["prefetched"] == 0 and s["prefetch_bytes"] == 0, s
    assert s["remote_hits"] >= 0.9 * s["gets"] and s["prefetch_hits"] == 0, s


def test_a_stale_manifest_still_builds_the_new_code(setup: Setup) -> None:
    clone = setup.checkout("job3")
    lib = clone / "app" / "lib0" / "lib0.go"
    lib.write_text(lib.read_text().replace('"!"', '"?"'))
    reader = setup.machine("reader-token")
    s = setup.build(reader, clone).stats
    assert s["prefetched"] > 0 and s["prefetch_wasted"] > 0 and s["misses"] > 0, s  # lib0 and main changed
    out = subprocess.run([str(reader.root / "app")], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "HELLO?"


def test_a_stale_manifest_s_listed_entries_still_come_from_the_stream(setup: Setup) -> None:
    data = setup.writer_manifest()
    ids = decode(data).ids
    stale = [os.urandom(32) if i % 2 else action for i, action in enumerate(ids)]  # half: never asked for
    request = urllib.request.Request(f"{setup.gate.url}/v1/ns/{NS}/manifests/stale-half", method="PUT",
                                     data=encode(stale, "test: half stale"),
                                     headers={"Authorization": "Bearer writer-token"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
    for env in ({}, {"GOCACHEGATE_PREFETCH_PROCESS": "0"}):
        reader = setup.machine("reader-token", GOCACHEGATE_MANIFEST_KEY="stale-half", **env)
        s = setup.build(reader, setup.checkout(f"job-stale-{len(env)}")).stats
        # go's gets showed the manifest stale early on; the entries it lists and go asks for were
        # still landed from the stream when asked for, not fetched again one by one.
        assert s["remote_hits"] >= 0.9 * s["gets"] and s["remote_errors"] == 0, (env, s)
        assert s["prefetch_hits"] >= 0.4 * s["gets"], (env, s)
        assert s["remote_hits"] - s["prefetch_hits"] <= 0.6 * s["gets"], (env, s)


def _warm(machine: Machine, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helper_binary(), "warm", *args], cwd=cwd, env={**machine.env, **env},
                          capture_output=True, text=True, timeout=120)


def test_warm_lands_the_manifest_before_go_runs_and_the_build_finds_it_local(setup: Setup) -> None:
    clone = setup.checkout("job-warm")
    reader = setup.machine("reader-token")
    # From the checkout's root with go -C, and another -o: the key is still the writer's build's.
    warmed = _warm(reader, "--", go_binary(), "-C", "app", "build", "-trimpath", "-o", "/elsewhere/app", ".",
                   cwd=clone)
    assert warmed.returncode == 0, warmed.stderr
    ids = decode(setup.writer_manifest()).ids
    assert f"{len(ids)} of {len(ids)} entries landed" in warmed.stderr, warmed.stderr
    assert "Traceback" not in warmed.stderr and len(warmed.stderr.splitlines()) == 1, warmed.stderr
    assert not reader.stats_file.exists()  # GOCACHEGATE_STATS_FILE is the go commands' (--stats-file is the warm's)
    s = setup.build(reader, clone).stats
    assert s["local_hits"] >= 0.9 * s["gets"] and s["prefetched"] == 0 and s["prefetch_bytes"] == 0, s
    assert _sha(reader.root / "app") == _sha(setup.tmp / "machine1" / "app")
    again = _warm(reader, "--", go_binary(), "build", "-trimpath", "-o", "app", ".", cwd=clone / "app")
    assert f"0 of {len(ids)} entries landed (0.0 MB)" in again.stderr, again.stderr
    assert f"{len(ids)} were in the local cache already" in again.stderr, again.stderr
    # A warm sends no manifest, even with a writer's token: go used nothing in it.
    before, stored = setup.manifests(), setup.requests("put_manifest", 204)
    writer = setup.machine("writer-token")
    assert _warm(writer, "--", go_binary(), "build", "-trimpath", "-o", "app", ".", cwd=clone / "app").returncode == 0
    assert setup.manifests() == before and setup.requests("put_manifest", 204) == stored


def test_warm_says_in_one_line_what_it_could_not_do(setup: Setup, tmp_path: Path) -> None:
    reader = setup.machine("reader-token")
    cwd = setup.repo / "app"
    cases = [
        ((["--key", "never-written"], {}), 0, "no manifest never-written at the gate yet"),
        ((["--key", "any"], {"GOCACHEGATE_URL": "http://127.0.0.1:9"}), 0, "prefetch stopped"),
        (([], {}), 2, "name the go command to warm for"),
        ((["--", str(tmp_path / "no-go"), "build"], {}), 2, "cannot run"),
        ((["--key", "any"], {"GOCACHEGATE_URL": ""}), 2, "no gate to warm from"),
        ((["--bogus"], {}), 2, "unrecognized arguments: --bogus"),
        ((["--key", "any"], {"GOCACHEGATE_DIR": str(tmp_path / "a-file" / "l1")}), 0, "cannot use the local cache"),
    ]
    (tmp_path / "a-file").write_text("not a directory")
    for (args, env), code, message in cases:
        done = _warm(reader, *args, cwd=cwd, **env)
        assert done.returncode == code and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert not list(reader.l1.glob("*/*-d"))  # nothing landed


def _copy_l1(source: Path, target: Path) -> None:
    """What a warm does to L1, by hand: every entry of ``source`` into ``target``, bodies before
    action records, each file by rename (a helper reads ``target`` meanwhile)."""
    for kind in ("d", "a"):
        for path in sorted(source.glob(f"*/*-{kind}")):
            (target / path.parent.name).mkdir(parents=True, exist_ok=True)
            tmp = target / path.parent.name / f".tmp-test-{path.name}"
            shutil.copyfile(path, tmp)
            tmp.replace(target / path.parent.name / path.name)


def _build_while_landing(setup: Setup, land: bool) -> dict[str, int]:
    """A reader builds while the test holds the landing lock of its key, as a running warm does;
    after a while the test lands the entries (``land``) or not, then lets the lock go."""
    key = setup.writer_key
    source = setup.machine("reader-token", GOCACHEGATE_MANIFEST_KEY=key)
    assert _warm(source, "--key", key, cwd=setup.repo).returncode == 0
    reader = setup.machine("reader-token", GOCACHEGATE_MANIFEST_KEY=key)
    lock = warming.hold(str(reader.l1), key)
    assert lock is not None
    clone = setup.checkout(f"job-follow-{land}")
    manifests_read = setup.requests("get_manifest", 200)
    result: list[GoRun] = []
    build = threading.Thread(target=lambda: result.append(setup.build(reader, clone)))
    build.start()
    deadline = time.monotonic() + 120
    while setup.requests("get_manifest", 200) == manifests_read and build.is_alive():
        assert time.monotonic() < deadline, "the build's helper never read the manifest"
        time.sleep(0.02)
    time.sleep(0.3)  # the helper follows the lock: go's gets wait for entries the manifest lists
    if land:
        _copy_l1(source.l1, reader.l1)
    lock.close()
    build.join(240)
    assert result, "the build did not finish"
    assert _sha(reader.root / "app") == _sha(setup.tmp / "machine1" / "app")
    return result[0].stats


def test_a_build_that_starts_while_a_warm_lands_follows_it(setup: Setup) -> None:
    s = _build_while_landing(setup, land=True)
    # Nothing streamed: the gets waited for the warm's entries in L1. Only those asked before the
    # manifest was read went to the gate alone.
    assert s["prefetch_bytes"] == 0 and s["prefetched"] == 0, s
    assert s["prefetch_hits"] > 0 and s["prefetch_hits"] + s["local_hits"] >= 0.9 * s["gets"], s
    assert s["remote_hits"] - s["prefetch_hits"] <= 0.1 * s["gets"] and s["remote_errors"] == 0, s


def test_a_warm_that_stops_leaves_the_waiting_gets_to_the_gate(setup: Setup) -> None:
    s = _build_while_landing(setup, land=False)
    assert s["prefetch_bytes"] == 0 and s["prefetch_hits"] == 0 and s["local_hits"] == 0, s
    assert s["remote_hits"] >= 0.9 * s["gets"] and s["bytes_downloaded"] > 0, s


def test_a_build_beside_a_landing_that_holds_goes_the_normal_way(setup: Setup) -> None:
    """Another go command of the job, with the same key, found the manifest stale: its landing
    lands only what that command asks for, and says so in its lock file. This build neither
    follows it (its gets would wait in vain) nor streams the stale manifest once more."""
    key = setup.writer_key
    reader = setup.machine("reader-token", GOCACHEGATE_MANIFEST_KEY=key)
    lock = warming.hold(str(reader.l1), key)
    assert lock is not None
    lock.hold_only()
    manifests_read = setup.requests("get_manifest", 200)
    try:
        s = setup.build(reader, setup.checkout("job-beside-holding")).stats
    finally:
        lock.close()
    assert setup.requests("get_manifest", 200) == manifests_read  # not even the manifest
    assert s["prefetch_bytes"] == 0 and s["prefetch_hits"] == 0 and s["prefetched"] == 0, s
    assert s["remote_hits"] >= 0.9 * s["gets"] and s["remote_errors"] == 0, s
    assert _sha(reader.root / "app") == _sha(setup.tmp / "machine1" / "app")


def test_a_second_warm_of_a_key_leaves_the_landing_to_the_first(setup: Setup) -> None:
    key = setup.writer_key
    reader = setup.machine("reader-token")
    lock = warming.hold(str(reader.l1), key)
    assert lock is not None
    try:
        done = _warm(reader, "--key", key, cwd=setup.repo)
    finally:
        lock.close()
    assert done.returncode == 0 and "another process is landing it" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert not list(reader.l1.glob("*/*-d"))


@pytest.fixture
def local_only(setup: Setup) -> Setup:
    if setup.backend != "local":
        pytest.skip("edits the gate's storage files: local backend only")
    return setup


def test_a_corrupt_entry_in_the_stream_is_rejected_and_counted(local_only: Setup) -> None:
    setup = local_only
    data = setup.writer_manifest()
    for action in decode(data).ids:
        path = setup.gate.storage_path / "ac" / NS / action.hex()[:2] / action.hex()
        blob = path.read_bytes()
        if b'"encoding":"identity"' in blob and len(blob) > 300:
            path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # the payload's last byte: same size
            break
    else:
        pytest.fail("no plain entry in the manifest to corrupt")
    reader = setup.machine("reader-token")
    s = setup.build(reader).stats
    assert s["corrupt"] == 1 and s["prefetched"] > 0, s  # once: the get for it is a miss, not a second try
    assert _sha(reader.root / "app") == _sha(setup.tmp / "machine1" / "app")


def test_a_gate_killed_mid_prefetch_leaves_the_build_succeeding(local_only: Setup, tmp_path: Path) -> None:
    setup = local_only
    # A second gate on the same storage, killed after a few KB of its prefetch answer.
    config = json.loads(json.dumps(TOKENS))
    config["storage"] = {"backend": "local", "path": str(setup.gate.storage_path), "fsync": False}
    with start_gate(tmp_path / "gate", config) as doomed, cutting_proxy(doomed.port, doomed.proc, 20_000) as url:
        reader = Machine(tmp_path / "m", url, GOCACHEGATE_NAMESPACE=NS, GOCACHEGATE_TOKEN="reader-token")
        run = reader.go("build", "-trimpath", "-o", str(reader.root / "app"), ".", cwd=setup.repo / "app").check()
        assert doomed.proc.wait(timeout=10) < 0  # killed
    s = run.stats
    assert 0 < s["prefetch_bytes"] < 40_000, s
    assert s["gets"] == s["hits"] + s["misses"] and s["misses"] > 0, s
    assert _sha(reader.root / "app") == _sha(setup.tmp / "machine1" / "app")
