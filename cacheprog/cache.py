"""What get, put and close do: the local cache first, the gate best-effort behind it.

Promises kept here (DESIGN.md, "Rules the helper never breaks"): a remote failure of any kind is
a miss or a dropped upload, never an error to go; a remote body reaches go only after its SHA-256
matched the output id; a put is answered once the body is on local disk and uploaded in the
background; close waits for uploads at most ``flush_timeout`` seconds; a read-only run, or one the
gate refused an upload, never uploads again. When L1 cannot be written (a full disk, a read-only
directory), the rest of the go command keeps its entries in a private scratch directory removed
at close: go gets every answer it would get from a working cache, only nothing is kept for the
next command (go itself fails a build on some put errors). With a prefetch (``prefetch.py``), a get for an entry
on its way waits for it; at close a writer sends the manifest of what this command used.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from . import __version__
from .config import Config
from .l1 import L1, L1Entry, L1Error
from .manifest import CommandKey, Recorder, command_key, encode
from .prefetch import ABSENT, ARRIVED, FETCH, LANDING, Prefetch, PrefetchSettings, land
from .remote import CorruptBody, Refused, Remote, RemoteError, RemoteUnavailable
from .stats import Stats
from .workers import Workers

if TYPE_CHECKING:
    from .lander import Lander

__all__ = ["Cache"]

_Written = TypeVar("_Written")

_COMPRESS_MIN_BYTES = 512
_UPLOAD_THREADS = 8
_REPORT_CORRUPT = 64  # corrupt entries named in one session report at most (the gate's bound too)


def _say(message: str) -> None:
    sys.stderr.write(f"gocacheprog: {message}\n")
    sys.stderr.flush()


class Cache:
    def __init__(self, cfg: Config, l1: L1, remote: Remote | None, stats: Stats,
                 say: Callable[[str], None] = _say, prefetch: PrefetchSettings | None = None,
                 key: CommandKey | None = None, lander: Lander | None = None) -> None:
        self.cfg = cfg
        self.l1 = l1
        self.remote = remote
        self.stats = stats
        self._say = say
        self._said: set[str] = set()
        self._lock = threading.Lock()
        self._missed_at: dict[bytes, float] = {}  # action -> when go missed it (for compute ms)
        self._uploads = Workers("upload", _UPLOAD_THREADS)
        self._upload = remote is not None and not cfg.read_only
        self._started = time.monotonic()
        self._scratch: L1 | None = None  # where entries go once L1 cannot be written
        self._corrupt: list[str] = []  # actions whose remote body was corrupt (sent with the session)
        self.recorder = Recorder()  # what go used: the manifest a writer sends at close
        self._key = key  # worked out from go's process when it is not given (``manifest_key``)
        self.prefetch: Prefetch | None = None
        if remote is not None and prefetch is not None and prefetch.enabled:
            self.prefetch = Prefetch(l1, remote, stats, prefetch, self.manifest_key, self.say_once, self._reported,
                                     self.in_store, lander)

    def manifest_key(self) -> CommandKey:
        """The key of this go command's manifest, worked out once (``manifest.py``)."""
        with self._lock:
            if self._key is None:
                self._key = command_key(os.environ)
            return self._key

    def say_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        self._say(message)

    def _remote_failed(self, exc: RemoteError) -> None:
        """Count a failure; once the circuit opens, tell the person once."""
        if isinstance(exc, RemoteUnavailable) or (self.remote is not None and self.remote.open_reason):
            self.say_once("circuit", f"gate unavailable ({exc}); using the local cache only from now on")
        if isinstance(exc, Refused):
            assert self.remote is not None
            if exc.status == 401:
                self.remote.disable(str(exc))
                self.say_once("401", f"the gate refused the token ({exc}); using the local cache only")
            else:
                self._upload = False
                self.say_once("403", f"the gate refused an upload ({exc}); keeping puts local (read-only)")

    # -- get ---------------------------------------------------------------------------------------

    def lookup(self, action_id: bytes) -> tuple[L1Entry | None, bool]:
        """The local answer at once: (entry, False) hit; (None, True) ask the gate; (None, False) miss."""
        self.recorder.asked(action_id)
        prefetch = self.prefetch
        landed = None if prefetch is None else prefetch.take(action_id)
        if isinstance(landed, tuple):  # landed by the prefetch before go asked: the remote paid for it
            self.recorder.used(action_id)
            self.stats.add(gets=1, hits=1, remote_hits=1, prefetch_hits=1, compute_ms_saved=landed[1])
            return landed[0], False
        if landed == LANDING and prefetch is not None:  # ``fetch`` waits for it, off the protocol loop
            prefetch.claim(action_id)
            return None, True
        entry = self.l1.get(action_id)
        if entry is not None:
            self.recorder.used(action_id)
            self.stats.add(gets=1, hits=1, local_hits=1)
            return entry, False
        if self.remote is not None and self.remote.open_reason is None:
            if self.prefetch is not None:
                self.prefetch.claim(action_id)
            return None, True
        self._missed(action_id)
        return None, False

    def fetch(self, action_id: bytes) -> L1Entry | None:
        """Ask the gate (after ``lookup`` said to); runs in a worker thread, never raises."""
        start = time.monotonic()
        outcome = FETCH if self.prefetch is None else self.prefetch.wait(action_id)
        entry = None
        if outcome == ARRIVED:
            landed = self.prefetch.take(action_id, claimed=True) if self.prefetch is not None else None
            if isinstance(landed, tuple):
                entry = landed[0]
                self.stats.add(prefetch_hits=1, compute_ms_saved=landed[1])
        if entry is None and outcome != ABSENT:
            entry = self._fetch(action_id)
        wait_ms = int((time.monotonic() - start) * 1000)
        if entry is None:
            self.stats.add(remote_wait_ms=wait_ms)
            self._missed(action_id)
        else:
            self.recorder.used(action_id)
            self.stats.add(gets=1, hits=1, remote_hits=1, remote_wait_ms=wait_ms)
        return entry

    def _missed(self, action_id: bytes) -> None:
        self.stats.add(gets=1, misses=1)
        with self._lock:
            self._missed_at[action_id] = time.monotonic()

    def _fetch(self, action_id: bytes) -> L1Entry | None:
        assert self.remote is not None
        try:
            download = self.remote.get(action_id.hex())
        except RemoteError as exc:
            if not isinstance(exc, RemoteUnavailable):
                self.stats.add(remote_errors=1)
            self._remote_failed(exc)
            return None
        if download is None:
            return None
        try:
            entry = self.in_store(lambda store: land(store, action_id, download.output_id, download.size,
                                                     download.put_time, download.chunks()), False)
        except L1Error:
            download.finish(ok=False)
            return None
        except CorruptBody as exc:
            download.finish(ok=False)
            self.stats.add(corrupt=1, bytes_downloaded=download.wire_bytes)
            self._reported(action_id)
            self.say_once("corrupt", f"discarded a remote entry that is not what it claims ({exc}; "
                                     f"action {action_id.hex()[:16]}…)")
            return None
        except RemoteError as exc:  # the connection broke or stalled while the body came
            download.finish(ok=False)
            self.stats.add(remote_errors=1, bytes_downloaded=download.wire_bytes)
            self.remote.failed(exc)
            self._remote_failed(exc)
            self.say_once("body", f"a remote body failed to arrive whole ({exc})")
            return None
        except Exception as exc:  # noqa: BLE001 - wire, decoder or disk: any of them makes this a miss
            download.finish(ok=False)
            self.stats.add(remote_errors=1, bytes_downloaded=download.wire_bytes)
            self.say_once("body", f"a remote body failed to arrive whole ({type(exc).__name__}: {exc})")
            return None
        download.finish(ok=True)
        self.stats.add(bytes_downloaded=download.wire_bytes)
        if entry is None:
            self.stats.add(corrupt=1)
            self._reported(action_id)
            self.say_once("corrupt", f"discarded a remote entry whose body does not match its digest "
                                      f"(action {action_id.hex()[:16]}…)")
            return None
        self.stats.add(compute_ms_saved=download.compute_ms)
        return entry

    def _reported(self, action_id: bytes) -> None:
        """Remember a corrupt entry for the session report: the gate checks it and removes it, or
        every later job would meet it again (puts are create-only: a good put never replaces it)."""
        with self._lock:
            if len(self._corrupt) < _REPORT_CORRUPT:
                self._corrupt.append(action_id.hex())

    # -- put ---------------------------------------------------------------------------------------

    def in_store(self, write: Callable[[L1], _Written], again: bool) -> _Written:
        """``write`` into L1, or into the scratch directory once L1 failed; after a failure, the
        scratch directory is tried at once when ``again`` (a body read from a stream cannot be).
        Raises L1Error. Every write into the local cache goes through here: a get's, a put's and
        the prefetch's."""
        store = self._scratch or self.l1
        try:
            return write(store)
        except L1Error as exc:
            fallback = self._store_failed(store, exc)
            if fallback is None or not again:
                raise
        try:
            return write(fallback)
        except L1Error as exc:
            self._store_failed(fallback, exc)
            raise

    def _store_failed(self, store: L1, exc: L1Error) -> L1 | None:
        """After a failed write into ``store``: the scratch directory to use from now on, or None."""
        import tempfile  # only on a failing disk: every go command waits for the helper's imports

        problem = ""
        with self._lock:
            if store is not self.l1:
                fallback, problem = None, f"scratch directory not writable either ({exc})"
            elif self._scratch is not None:
                return self._scratch
            else:
                try:
                    fallback = self._scratch = L1(tempfile.mkdtemp(prefix="gocacheprog-scratch-"), self.l1.max_bytes)
                except OSError as mkdtemp_exc:
                    fallback, problem = None, f"local cache not writable ({exc}), nor a scratch directory " \
                                              f"({mkdtemp_exc.strerror})"
        if fallback is None:
            self.say_once("scratch", f"{problem}: puts fail, as go's own cache does on a full disk")
        else:
            self.say_once("l1", f"local cache not writable ({exc}); keeping this go command's entries in "
                                f"{fallback.root} until it ends")
        return fallback

    def put(self, action_id: bytes, output_id: bytes, body: bytes) -> L1Entry:
        """Store locally and answer; the upload goes on in the background. Raises L1Error when
        neither L1 nor a scratch directory can take it (as go's own cache on a full disk)."""
        entry = self.in_store(lambda store: store.put(action_id, output_id, body, datetime.now(UTC)), True)
        self.recorder.used(action_id)
        self.stats.add(puts=1)
        with self._lock:
            missed_at = self._missed_at.pop(action_id, None)
        compute_ms = None if missed_at is None else int((time.monotonic() - missed_at) * 1000)
        if self._upload and self.remote is not None and self.remote.open_reason is None:
            self._uploads.submit(lambda: self._upload_one(action_id, entry, compute_ms))
        return entry

    def _upload_one(self, action_id: bytes, entry: L1Entry, compute_ms: int | None) -> None:
        assert self.remote is not None
        if not self._upload or self.remote.open_reason is not None:
            return
        try:
            with open(entry.path, "rb") as f:
                body = f.read()
        except OSError:
            return  # trimmed meanwhile: nothing to upload
        payload, encoding = body, "identity"
        if len(body) >= _COMPRESS_MIN_BYTES:
            import zstandard

            packed = zstandard.ZstdCompressor(level=1).compress(body)
            if len(packed) < len(body) * 0.9:
                payload, encoding = packed, "zstd"
        try:
            self.remote.put(action_id.hex(), entry.output_id.hex(), entry.size, payload, encoding, compute_ms)
        except RemoteError as exc:
            if not isinstance(exc, RemoteUnavailable):
                self.stats.add(upload_errors=1)
            self._remote_failed(exc)
            return
        self.stats.add(uploads=1, bytes_uploaded=len(payload))

    # -- close -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the prefetch, flush uploads (bounded), send the manifest, report the session, write
        the stats; never raises."""
        if self.prefetch is not None:
            self.prefetch.close()
        if self.remote is not None:
            dropped = self._uploads.drain(self.cfg.flush_timeout)
            if dropped:
                self.stats.add(uploads_dropped=dropped)
                self._say(f"{dropped} uploads still pending after {self.cfg.flush_timeout:g}s; dropped")
            self._send_manifest()
            if self.remote.open_reason is None:
                report: dict[str, object] = dict(self.stats.snapshot())
                report.update({k.lower(): v for k, v in self.cfg.job.items()})
                report["duration_ms"] = int((time.monotonic() - self._started) * 1000)
                report["helper_version"] = __version__
                if self._corrupt:
                    report["corrupt_actions"] = list(self._corrupt)
                with contextlib.suppress(RemoteError):  # best effort: the stats file has them too
                    self.remote.post_session(report)
        if self.cfg.stats_file:
            try:
                self.stats.write(self.cfg.stats_file)
            except OSError as exc:
                self._say(f"cannot write the stats file: {exc.strerror}")
        if self.cfg.verbose:
            line = self.stats.summary().removeprefix("gocacheprog: ")
            if self.prefetch is not None:  # what ``gocachegate admin show-manifest NS KEY`` shows
                line += f", manifest {self.manifest_key().key}"
            self._say(line)
        if self._scratch is not None:  # go has read every path it was given: close is its last request
            import shutil

            shutil.rmtree(self._scratch.root, ignore_errors=True)

    def _send_manifest(self) -> None:
        """A writer's manifest of what go used, unless the gate has the same one (``manifest.py``)."""
        if self.prefetch is None or self.remote is None or not self._upload or self.remote.open_reason is not None:
            return
        ids = self.recorder.ids()
        stored = self.prefetch.stored
        if not ids or (stored is not None and stored.same(ids)):
            return
        key = self.manifest_key()
        try:
            self.remote.put_manifest(key.key, encode(ids, key.description))
        except RemoteError as exc:
            if not isinstance(exc, Refused | RemoteUnavailable):  # a reader's 403 is expected
                self.stats.add(upload_errors=1)
                self.say_once("manifest", f"could not send the build manifest ({exc})")
            return
        self.stats.add(manifests_sent=1)
