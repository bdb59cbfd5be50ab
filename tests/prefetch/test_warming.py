"""The lock of a warm in progress: one holder per key and L1, seen by others, gone with its process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

from cacheprog import warming


def test_one_holder_per_key_and_cache(tmp_path: Path) -> None:
    first = warming.hold(str(tmp_path / "l1"), "key-a")
    assert first is not None
    assert warming.hold(str(tmp_path / "l1"), "key-a") is None
    other_key, other_cache = warming.hold(str(tmp_path / "l1"), "key-b"), warming.hold(str(tmp_path / "l2"), "key-a")
    assert other_key is not None and other_cache is not None
    for held in (first, other_key, other_cache):
        held.close()
    again = warming.hold(str(tmp_path / "l1"), "key-a")
    assert again is not None
    again.close()


def test_a_watch_sees_the_landing_until_it_ends(tmp_path: Path) -> None:
    root = str(tmp_path / "l1")
    assert warming.watch(root, "k") is None  # no lock file yet
    held = warming.hold(root, "k")
    assert held is not None
    seen = warming.watch(root, "k")
    assert seen is not None and seen.active()
    held.close()
    assert not seen.active()
    seen.close()
    assert warming.watch(root, "k") is None
    assert not list(Path(root).glob("warming-*.lock"))  # the landing that ended took its file along


def test_a_lock_file_removed_under_an_opener_is_not_held_in_secret(tmp_path: Path) -> None:
    """B opens the lock file, A's landing ends and removes it, then B locks what it opened: B must
    lock the file at the path instead, or C, opening the path afresh, would land beside B."""
    root = str(tmp_path / "l1")
    first = warming.hold(root, "k")
    assert first is not None
    path = next(Path(root).glob("warming-*.lock"))
    real_open = os.open
    opened: list[str] = []

    def open_then_first_ends(file: str, flags: int, mode: int = 0o777) -> int:
        fd = real_open(file, flags, mode)
        if file == str(path) and not opened:
            opened.append(file)
            first.close()  # between B's open and its flock
        return fd

    with mock.patch("cacheprog.warming.os.open", open_then_first_ends):
        second = warming.hold(root, "k")
    assert opened and second is not None
    assert warming.hold(root, "k") is None  # the file at the path is the one B holds
    seen = warming.watch(root, "k")
    assert seen is not None and seen.active()
    seen.close()
    second.close()


@contextlib.contextmanager
def _holder(root: str, key: str, then: str = "") -> Iterator[subprocess.Popen[str]]:
    """Another process that holds the landing lock of ``key`` (as ``h``, after running ``then``)
    until the test kills it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from cacheprog import warming; "
         f"h = warming.hold({root!r}, {key!r}); assert h is not None; {then}print('held', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait(10)


def test_the_lock_goes_with_its_process(tmp_path: Path) -> None:
    root = str(tmp_path / "l1")
    with _holder(root, "k") as holder:
        seen = warming.watch(root, "k")
        assert seen is not None and seen.active()
        holder.kill()
        holder.wait(10)
        assert not seen.active()
        seen.close()


def test_a_landing_that_holds_says_so_and_a_new_holder_starts_clean(tmp_path: Path) -> None:
    root = str(tmp_path / "l1")
    held = warming.hold(root, "k")
    assert held is not None
    seen = warming.watch(root, "k")
    assert seen is not None and seen.active() and not seen.holding()
    held.hold_only()
    assert seen.active() and seen.holding()  # still the holder: others neither follow it nor stream
    seen.close()
    # A holder that dies leaves its file behind, ``hold`` and all: the next holder lands ahead again.
    with _holder(root, "dies", then="h.hold_only(); ") as holder:
        holder.kill()
        holder.wait(10)
        assert Path(warming._path(root, "dies")).read_bytes() == b"hold\n"  # left behind
        again = warming.hold(root, "dies")
        assert again is not None
        after = warming.watch(root, "dies")
        assert after is not None and after.active() and not after.holding()
        after.close()
        again.close()
    held.close()


def test_hold_only_after_close_writes_nowhere(tmp_path: Path) -> None:
    """``hold_only`` comes from the child's command thread, ``close`` from its main thread: once
    closed, the lock's descriptor number may already be another file's."""
    held = warming.hold(str(tmp_path / "l1"), "k")
    assert held is not None
    held.close()
    other = tmp_path / "other"
    with open(other, "wb") as reused:  # most likely the number the lock had
        held.hold_only()
        reused.flush()
    assert other.read_bytes() == b""
