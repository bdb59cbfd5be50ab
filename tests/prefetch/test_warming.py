"""The lock of a warm in progress: one holder per key and L1, seen by others, gone with its process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert warming.watch(root, "k") is None  # the file stays, unlocked


def test_the_lock_goes_with_its_process(tmp_path: Path) -> None:
    root = str(tmp_path / "l1")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from cacheprog import warming; "
         f"h = warming.hold({root!r}, 'k'); print(h is not None, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        seen = warming.watch(root, "k")
        assert seen is not None and seen.active()
        holder.kill()
        holder.wait(10)
        assert not seen.active()
        seen.close()
    finally:
        holder.kill()
        holder.wait(10)
