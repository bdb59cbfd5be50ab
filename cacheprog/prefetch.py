"""The streamed prefetch: the entries of this command's manifest, written into L1 while go asks.

go asks for entries a couple at a time, so with storage latency L a remote-warm build pays
about L per get. Right after the handshake a thread asks the gate for the manifest of the
command's key (``manifest.py``), drops what L1 already has or go already asked for, and asks
for the rest in ONE request whose answer streams every entry that exists (the gate reads 64 at
once). Meanwhile the protocol loop goes on:

- a get for an entry on its way waits for it (at most ``wait_seconds``, then asks alone);
- a get for an entry the gate said does not exist is a miss at once;
- a get for anything else goes the normal way at once.

Landing an entry in L1 (checked like any remote body: size and SHA-256, ``land``) costs a zstd
decode, a hash and two file creations. While the manifest proves right (nearly every entry go
asked for so far was in it), entries up to 16 MiB are landed as they arrive by a few threads
ahead of go, so its gets find them in L1: the build waits for the stream, not for the landing.
When go asks for much the manifest lacks (a stale manifest), landing ahead would spend the disk
on entries go may never want, so arriving entries are held in memory instead and landed by the
get that asks for one; past ``hold_bytes`` the oldest held are landed to make room. Larger
entries are landed from the stream as they come.

Where the helper can fork (``lander.py``), the stream and the landing run in a child process
instead, which lands the whole manifest ahead (as ``gocacheprog warm`` does) and tells this
process of each entry; here the gets wait for its word (``_from_lander``), and the protocol loop
never waits for the landing threads' GIL. Once go's gets show the manifest stale, the child is
stopped, and what it did not land is fetched entry by entry.

A ``gocacheprog warm`` landing the same manifest into the same L1 while go runs (``warming.py``)
is followed instead: the manifest is read, nothing is streamed, and a get for an entry the warm
has not landed yet waits for it to appear in L1, then asks the gate alone once the warm is done.

Bounded: the stream stops at ``max_bytes`` or ``max_seconds`` and at close; any failure ends the
prefetch quietly (what did not arrive is fetched the normal way) and never fails the build.
Counted: ``prefetched`` (entries received whole), ``prefetch_hits`` (gets they served),
``prefetch_bytes`` (on the wire), ``prefetch_wasted`` (received, never asked for by this command).

The stream (docs/prefetch.md)::

    b"GCP1" frame* b"Z" u32(entries sent)
    frame = b"E" action(32) output(32) u64 size, i64 put-time ms, i64 compute ms (-1: none),
                 u8 encoding (0 identity, 1 zstd), u64 length, payload(length)
          | b"M" action(32)   no such entry: a get for it is a miss
          | b"S" action(32)   not sent (storage failed, entry unreadable): fetch it normally
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

from . import warming
from .l1 import L1, L1Entry, L1Error
from .manifest import CommandKey, ManifestError, Stored, decode
from .remote import PrefetchStream, Remote, RemoteError, bounded_chunks
from .stats import Stats
from .workers import Workers

if TYPE_CHECKING:
    from .lander import Lander

__all__ = ["ABSENT", "ARRIVED", "FETCH", "LANDING", "MAGIC", "Prefetch", "PrefetchSettings", "Reporter", "land",
           "settings_from_env"]

_local = threading.local()
ARRIVED, ABSENT, FETCH = "arrived", "absent", "fetch"
LANDING = "landing"  # ``take``: a lander is landing it this very moment
MAGIC = b"GCP1"
ENTRY = struct.Struct(">32s32sQqqBQ")
_CHUNK = 1 << 16
#: The stream is read this much at a time (a frame's payload is then one slice, not many reads).
_READ = 1 << 20
#: Entries up to this size arrive whole in memory and are landed by the threads below, side by
#: side; a larger one is landed from the stream as it comes, and nothing else arrives meanwhile.
#: Big entries are few and carry most bytes (std: 39 of 1,072 entries over 1 MiB, 91 of 160 MiB),
#: so this bound decides whether they land in parallel. Memory stays bounded: held payloads by
#: ``hold_bytes``, decoded bodies by this size per landing thread.
_WHOLE = 16 << 20
#: Threads landing entries ahead of go (decode, hash and write release the GIL). Each takes the
#: oldest held entry, lands it and takes the next, so a thread is woken once per run, not per entry.
_LANDERS = 3
#: Once go asked for this many entries L1 lacked, land ahead while at least this share of them
#: were in the manifest; before that, keep at most ``_LEAD`` entries landed and not yet asked for.
_EVIDENCE = 16
_FRESH = 0.75
_LEAD = 64
#: How often a helper that follows a warm looks in L1 for the entries its gets wait for.
_FOLLOW_POLL_S = 0.002
#: How long close waits for a prefetch that has no stream open yet (a follower stops within a poll).
_UNSTARTED_JOIN_S = 0.1


#: ``Cache.in_store``: a write into L1 (or the scratch directory), tried there again or not.
InStore = Callable[[Callable[[L1], L1Entry | None], bool], L1Entry | None]


class Reporter(Protocol):
    """Told what becomes of each entry: a child process's landing tells its parent (``lander.py``)."""

    def wanted(self, action_ids: list[bytes], manifest: bytes) -> None: ...

    def landed(self, action_id: bytes, entry: L1Entry, compute_ms: int) -> None: ...

    def settled(self, action_id: bytes, state: str) -> None: ...


class PrefetchSettings(NamedTuple):
    enabled: bool = True  # GOCACHEGATE_PREFETCH=0: neither prefetch nor write manifests
    max_bytes: int = 4 << 30  # GOCACHEGATE_PREFETCH_MAX_BYTES: stop the stream after this many
    max_seconds: float = 300.0  # GOCACHEGATE_PREFETCH_SECONDS: ... or after this long
    wait_seconds: float = 1.0  # a get waits this long for its entry on the stream, then asks alone
    hold_bytes: int = 256 << 20  # entries held in memory, not landed yet; past it the oldest are landed
    ahead: bool = False  # land every entry as it arrives: nobody asks (``gocacheprog warm``)


def settings_from_env(env: Mapping[str, str]) -> PrefetchSettings:
    """The prefetch's settings from ``GOCACHEGATE_PREFETCH*``; raises ValueError for a bad one."""
    defaults = PrefetchSettings()
    enabled = env.get("GOCACHEGATE_PREFETCH", "1").strip().lower() not in ("0", "false", "no", "off")
    max_bytes = int(env.get("GOCACHEGATE_PREFETCH_MAX_BYTES") or defaults.max_bytes)
    max_seconds = float(env.get("GOCACHEGATE_PREFETCH_SECONDS") or defaults.max_seconds)
    if max_bytes < 0 or max_seconds < 0:
        raise ValueError("GOCACHEGATE_PREFETCH_MAX_BYTES and GOCACHEGATE_PREFETCH_SECONDS must not be negative")
    return PrefetchSettings(enabled, max_bytes, max_seconds, defaults.wait_seconds, defaults.hold_bytes)


def land(l1: L1, action_id: bytes, output_id: bytes, size: int, put_time: datetime | None,
         chunks: Iterable[bytes]) -> L1Entry | None:
    """Write a remote body into L1 if, and only if, its length is ``size`` and its SHA-256 ``output_id``.

    None when it does not match (nothing is written). Raises L1Error when L1 cannot be written;
    what ``chunks`` raises passes through, and nothing is written then either.
    """
    digest = hashlib.sha256()
    received = 0
    with l1.create_temp(output_id) as (tmp, f):
        for chunk in chunks:
            digest.update(chunk)
            f.write(chunk)
            received += len(chunk)
    if received != size or digest.digest() != output_id:
        os.unlink(tmp)
        return None
    l1.commit_output(tmp, output_id)
    return l1.put_action(action_id, output_id, size, put_time or datetime.now(UTC))


class _Held(NamedTuple):
    """An entry received whole, not yet in L1."""

    output_id: bytes
    size: int
    put_time: datetime
    compute_ms: int
    zstd: bool
    payload: bytes

    def body(self) -> bytes:
        """The body, decoded; raises zstandard.ZstdError."""
        return _decompress(self.payload, self.size) if self.zstd else self.payload


def _decompress(payload: bytes, size: int) -> bytes:
    """A whole zstd payload decoded in one call, never into more than ``size`` bytes: a frame that
    declares another size is refused before any buffer is made (that is the bomb's way in)."""
    import zstandard

    declared = zstandard.frame_content_size(payload)
    if declared not in (-1, size):
        raise zstandard.ZstdError(f"frame declares {declared} bytes, the entry {size}")
    if size == 0:
        return b"".join(_decoded(_Payload(_Whole(payload), len(payload)), size))
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:  # one per thread: making one per entry costs more than small entries' decoding
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor.decompress(payload, max_output_size=size)


def _land_whole(l1: L1, action_id: bytes, held: _Held) -> L1Entry | None:
    """``land`` for an entry received whole: decoded and checked in memory, written in one piece."""
    body = held.body()
    if len(body) != held.size or hashlib.sha256(body).digest() != held.output_id:
        return None
    return l1.put(action_id, held.output_id, body, held.put_time)


class _Slot:
    """An entry on its way: ``settled`` once it arrived or will not, ``state`` says how. A get
    that waits for it makes ``event`` (few do: one per slot would cost milliseconds per thousand
    entries, before the stream is asked for). Whoever lands a held entry (a get, or a thread ahead
    of go) holds ``landing``; ``landed`` says how it went: ARRIVED (in L1), ABSENT (corrupt: a get
    for it is a miss) or FETCH (ask the gate alone). ``settled`` and ``event`` change under the
    prefetch's lock."""

    __slots__ = ("abandoned", "event", "held", "landed", "landing", "settled", "state")

    def __init__(self) -> None:
        self.settled = False
        self.event: threading.Event | None = None
        self.state = FETCH
        self.abandoned = False  # a get stopped waiting and fetches it itself
        self.held: _Held | None = None  # ARRIVED, still in memory
        self.landing = threading.Lock()
        self.landed = FETCH


class _Frames:
    """Exact reads over the stream, which is read ``_READ`` bytes at a time."""

    def __init__(self, stream: PrefetchStream) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0

    def some(self, n: int) -> bytes:
        """Between 1 and ``n`` bytes; raises RemoteError at the end of the stream."""
        if self._pos >= len(self._buf):
            self._buf = self._stream.read(_READ)
            self._pos = 0
            if not self._buf:
                raise RemoteError("prefetch stream cut short")
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def exact(self, n: int) -> bytes:
        out = self.some(n)
        if len(out) == n:
            return out
        parts = [out]
        left = n - len(out)
        while left:
            part = self.some(left)
            parts.append(part)
            left -= len(part)
        return b"".join(parts)


class _Whole:
    """A payload already in memory, read like the stream."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def some(self, n: int) -> bytes:
        out, self._data = self._data[:n], self._data[n:]
        return bytes(out)


class _Payload:
    """One frame's payload: read as chunks or as a file (for the zstd decoder), or skipped."""

    def __init__(self, frames: _Frames | _Whole, length: int) -> None:
        self._frames = frames
        self.left = length

    def read(self, n: int = _CHUNK) -> bytes:
        if self.left <= 0:
            return b""
        piece = self._frames.some(min(n if n > 0 else _CHUNK, self.left))
        self.left -= len(piece)
        return piece

    def chunks(self) -> Iterator[bytes]:
        while piece := self.read(_CHUNK):
            yield piece

    def skip(self) -> None:
        for _ in self.chunks():
            pass


def _decoded(payload: _Payload, size: int) -> Iterator[bytes]:
    """A zstd payload decoded; never more than ``size`` + 1 bytes (a bomb stops there)."""
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(payload, read_size=_CHUNK)  # type: ignore[arg-type]
    yield from bounded_chunks(reader, size)


class Prefetch:
    def __init__(self, l1: L1, remote: Remote, stats: Stats, settings: PrefetchSettings,
                 key: Callable[[], CommandKey], say_once: Callable[[str, str], None],
                 report_corrupt: Callable[[bytes], None], in_store: InStore, lander: Lander | None = None) -> None:
        self.settings = settings
        self._lander = lander  # the child process landing for us (``lander.py``), if any
        self._report_corrupt = report_corrupt  # named in the session report, for the gate's quarantine
        self._l1 = l1
        self._in_store = in_store  # the cache's: L1, or its scratch directory once L1 failed
        self._remote = remote
        self._stats = stats
        self._key = key
        self._say_once = say_once
        self._lock = threading.Lock()
        self._slots: dict[bytes, _Slot] = {}
        self._waited: set[bytes] = set()  # slots a get waits for: all a follower looks for (it drops settled ones)
        self._asked: set[bytes] = set()  # asked by go before the manifest was known
        self._known = False  # the manifest was read (or there is none): _asked is no longer kept
        self._landed: dict[bytes, tuple[L1Entry, int]] = {}  # in L1 by our hand, not yet asked for
        self._holding: dict[bytes, int] = {}  # held in memory and not being landed, oldest first -> bytes
        self._held_bytes = 0
        self._room = threading.Condition(self._lock)  # notified when held bytes go down
        self._in_flight = 0  # taken by the landers, not landed yet
        self._landing = 0  # lander threads at work
        self._lander_holds = False  # the child was told to land only what go asks for
        #: Land ahead of go: True, every entry as it arrives (``ahead``); False, only what a get asks
        #: for (``hold``); None, while go's gets show it pays (``_ahead_pays``).
        self._ahead: bool | None = True if settings.ahead else None
        self._asked_count = 0  # entries L1 lacked that go asked for once the manifest was known
        self._listed_count = 0  # ... and that were in the manifest
        self._stop = threading.Event()
        self._stream: PrefetchStream | None = None
        self._thread: threading.Thread | None = None
        self._landers = Workers("land", _LANDERS)
        #: The manifest as the gate had it (None: none, or not read): close skips an unchanged one.
        self.stored: Stored | None = None
        self.landed = 0  # entries it wrote into the local cache
        self.reporter: Reporter | None = None  # told of every entry (in a lander child process)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()

    # -- the protocol loop's side --------------------------------------------------------------

    def claim(self, action_id: bytes) -> None:
        """go asked for an entry L1 lacks: remember it, so the prefetch does not fetch it twice."""
        with self._lock:
            if not self._known:
                if action_id not in self._slots:
                    self._asked.add(action_id)
                return
            self._asked_count += 1
            self._listed_count += action_id in self._slots
            feed = bool(self._holding) and self._landing < _LANDERS
            hold = self._lander is not None and bool(self._slots) and not self._lander_holds and self._stale()
            if hold:
                self._lander_holds = True
                waited = [a for a in self._waited if not self._slots[a].settled]
        if feed:
            self._feed()  # the evidence changed
        if hold and self._lander is not None:
            self._lander.hold()  # the manifest is stale: the child lands what go asks for, no more
            for waiting in waited:
                self._lander.want(waiting)

    def wait(self, action_id: bytes) -> str:
        """ARRIVED (now in L1), ABSENT (the gate has none) or FETCH (ask the gate alone).

        An entry held in memory is landed here, on the asking get's thread, unless a thread
        ahead of go is landing it already: then this waits for that.
        """
        with self._lock:
            slot = self._slots.get(action_id)
            if slot is None:
                return FETCH
            event = None
            if not slot.settled:
                event = slot.event = slot.event or threading.Event()
                self._waited.add(action_id)
            want = event is not None and self._lander is not None and self._lander_holds
        if want and self._lander is not None:
            self._lander.want(action_id)  # the child holds it, or will: it lands it now
        if event is not None and not event.wait(self.settings.wait_seconds):
            with self._lock:
                slot.abandoned = not slot.settled
                if slot.abandoned:
                    return FETCH
        if slot.state != ARRIVED:
            return slot.state
        return self._land_slot(action_id, slot)

    def take(self, action_id: bytes, *, claimed: bool = False) -> tuple[L1Entry, int] | str | None:
        """For an entry the prefetch landed: the entry (no need to read L1 for it) and its compute
        ms, once (then it is no longer wasted).

        Called on every get before L1 is read; a landed entry counts as a get the manifest
        foresaw; ``claimed``: this get was counted by ``claim`` already. LANDING: a lander is
        landing it right now. Its files may be in L1 already, and read from there it would count
        as a local hit; the get waits for it on a worker thread (``wait``), never on the protocol
        loop: a 16 MiB entry takes tens of milliseconds, and go's other gets go on meanwhile.
        """
        with self._lock:
            landed = self._landed.pop(action_id, None)
            slot = self._slots.get(action_id) if landed is None and not claimed else None
        if slot is not None and (slot.landing.locked() or (self._lander is not None and not slot.settled)):
            return LANDING  # a child's entry may be in L1 before its word: wait for the word
        if landed is None or claimed:
            return landed
        with self._lock:
            self._asked_count += 1
            self._listed_count += 1
            feed = bool(self._holding) and self._landing < _LANDERS
        if feed:
            self._feed()  # the evidence changed, or the lead has room again
        return landed

    @property
    def holding(self) -> int:
        """Entries received and held in memory, not landed (yet)."""
        with self._lock:
            return len(self._holding)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def wanted(self) -> int:
        """Entries of the manifest asked from the gate (the rest were in L1): one slot each."""
        with self._lock:
            return len(self._slots)

    def finish(self, timeout: float | None) -> bool:
        """Wait for the stream to end and every entry to be landed; False if it did not in time."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop streaming: a read blocked on the stream returns at once. From any thread, never from a
        signal handler (``Event.set`` takes a lock the interrupted thread may hold: ``lander.py``)."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.abort()

    def close(self) -> None:
        """Cancel what is still streaming and count what was received for nothing."""
        self.stop()
        if self._lander is not None:
            self._lander.stop()
        if self._thread is not None:
            # With a stream (or a child) open, let what is landing finish. Before it, the thread is in a
            # request a stop cannot cut short (a slow gate's answer to the manifest request): go's
            # close does not wait for that; the thread dies with the process.
            self._thread.join(2.0 if self._stream is not None or self._lander is not None else _UNSTARTED_JOIN_S)
        with self._lock:
            held = [slot for slot in self._slots.values() if slot.held is not None]
            for slot in held:
                slot.held = None
            # Landed ahead with nobody to ask (``ahead``) is the point, not waste: later commands ask.
            wasted = len(held) + (0 if self.settings.ahead else len(self._landed))
            self._landed = {}
            self._holding.clear()
        self._stats.add(prefetch_wasted=wasted)

    # -- the prefetch thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._prefetch()
        except (RemoteError, ManifestError) as exc:
            if not self._stop.is_set():
                self._say_once("prefetch", f"prefetch stopped ({exc}); go's gets fetch the rest one by one")
        except Exception as exc:  # noqa: BLE001 - a bug here must never fail the build
            self._say_once("prefetch", f"prefetch failed ({type(exc).__name__}: {exc})")
        finally:
            self._landers.drain(None if not self._stop.is_set() else 1.0)
            with self._lock:
                self._known = True
                self._asked.clear()
                waiting = []
                for slot in self._slots.values():
                    if not slot.settled:  # state FETCH: go asks the gate itself
                        slot.settled = True
                        if slot.event is not None:
                            waiting.append(slot.event)
            for event in waiting:
                event.set()

    def _prefetch(self) -> None:
        if self._lander is not None and self._from_lander(self._lander):
            return
        key = self._key()
        warm = None if self.settings.ahead else warming.watch(self._l1.root, key.key)
        if warm is not None and warm.holding():  # its go command found the manifest stale: so would ours
            warm.close()
            return
        try:
            wanted = self._slots_for(key, following=warm is not None)
            if not wanted or self._stop.is_set():
                return
            if warm is not None:
                self._follow(warm)
            else:
                self._stream_in(wanted)
        finally:
            if warm is not None:
                warm.close()

    def _slots_for(self, key: CommandKey, *, following: bool) -> list[bytes]:
        """Read the manifest and make a slot for each entry L1 lacks and go has not asked for yet.

        ``following``: a slot for every entry, without reading L1 for each (a get looks in L1
        before it waits, and the warm is filling L1 meanwhile)."""
        data = self._remote.get_manifest(key.key)
        if data is None:
            if self.reporter is not None:
                self.reporter.wanted([], b"")
            return []
        self.stored = decode(data)
        missing = self.stored.ids if following else self._l1.lacking(self.stored.ids)
        with self._lock:
            wanted = [a for a in missing if a not in self._asked and a not in self._slots]
            for action_id in wanted:
                self._slots[action_id] = _Slot()
            self._known = True
            self._asked.clear()
        if self.reporter is not None:
            self.reporter.wanted(wanted, data)
        return wanted

    def _from_lander(self, lander: Lander) -> bool:
        """Settle the slots from a child's landing (``lander.py``) until it exits; False when a
        ``gocacheprog warm`` lands this manifest already (the child left it to that one)."""
        from .lander import end_counts, landed_entry

        wanted: list[bytes] = []
        for kind, payload in lander.messages():
            if kind == b"L":
                action_id, entry, compute_ms = landed_entry(payload, self._l1.output_path)
                with self._lock:
                    slot = self._slots.get(action_id)
                    if slot is not None and not slot.settled:
                        slot.landed = ARRIVED
                        self._landed[action_id] = (entry, compute_ms)
                        self.landed += 1
                if slot is None:  # go asked for it before the child's list came: its get fetched it
                    self._stats.add(prefetch_wasted=1)
                self._settle(action_id, ARRIVED)
            elif kind in (b"A", b"F"):
                self._settle(payload, ABSENT if kind == b"A" else FETCH)
            elif kind == b"I":
                wanted += [payload[i:i + 32] for i in range(0, len(payload), 32)]
            elif kind == b"K":
                self.stored = decode(payload) if payload else None
                with self._lock:
                    for action_id in wanted:
                        if action_id not in self._asked:  # go asked already: its get fetches it
                            self._slots.setdefault(action_id, _Slot())
                    self._known = True
                    self._asked.clear()
            elif kind == b"C":
                self._stats.add(corrupt=1)
                self._report_corrupt(payload)
            elif kind == b"T":
                topic, _, message = payload.decode(errors="replace").partition("\0")
                self._say_once(topic, message)
            elif kind == b"E":
                prefetched, wire_bytes, wasted = end_counts(payload)
                self._stats.add(prefetched=prefetched, prefetch_bytes=wire_bytes, prefetch_wasted=wasted)
            elif kind == b"B":
                with self._lock:
                    self._lander = None  # it landed nothing and is gone: ``take`` must not wait for its word
                return False
        return True

    def _follow(self, warm: warming.Watch) -> None:
        """A warm lands this manifest into L1 right now: settle each entry a get waits for once the
        warm has landed it, until the warm is done (``_run`` then settles the rest: their gets find
        them in L1, or ask the gate alone)."""
        deadline = time.monotonic() + self.settings.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            running = warm.active() and not warm.holding()  # holding: it lands none of ours any more
            with self._lock:
                self._waited = {a for a in self._waited if not (self._slots[a].settled or self._slots[a].abandoned)}
                waited = list(self._waited)
            for action_id in waited:
                entry = self._l1.get(action_id)
                if entry is not None:
                    with self._lock:
                        self._slots[action_id].landed = ARRIVED
                        self._landed[action_id] = (entry, 0)  # its compute time is the warm's to know
                    self._settle(action_id, ARRIVED)
            if not running:
                return
            self._stop.wait(_FOLLOW_POLL_S)

    def _stream_in(self, wanted: list[bytes]) -> None:
        """Ask the gate for ``wanted`` in one stream and land what arrives."""
        stream = self._remote.open_prefetch(b"".join(wanted))
        self._stream = stream
        if self._stop.is_set():
            stream.abort()
        ok = False
        try:
            ok = self._receive(_Frames(stream), stream)
        finally:
            stream.finish(ok)
            self._stats.add(prefetch_bytes=stream.wire_bytes)

    def _receive(self, frames: _Frames, stream: PrefetchStream) -> bool:
        """Land every entry of the stream; True when it was read to its end."""
        if frames.exact(len(MAGIC)) != MAGIC:
            raise RemoteError("the gate's prefetch answer is not a prefetch stream")
        deadline = time.monotonic() + self.settings.max_seconds
        while True:
            if self._stop.is_set():
                return False
            if stream.wire_bytes > self.settings.max_bytes or time.monotonic() > deadline:
                self._say_once("prefetch-budget", "prefetch stopped at its byte or time budget")
                return False
            kind = frames.exact(1)
            if kind == b"E":
                self._entry(frames)
            elif kind in (b"M", b"S"):
                action_id, state = frames.exact(32), ABSENT if kind == b"M" else FETCH
                self._settle(action_id, state)
                if self.reporter is not None:
                    self.reporter.settled(action_id, state)
            elif kind == b"Z":
                frames.exact(4)
                return True
            else:
                raise RemoteError(f"unknown prefetch frame {kind!r}")

    def _entry(self, frames: _Frames) -> None:
        action_id, output_id, size, put_ms, compute_ms, encoding, length = ENTRY.unpack(frames.exact(ENTRY.size))
        payload = _Payload(frames, length)
        with self._lock:
            slot = self._slots.get(action_id)
        if slot is None or slot.abandoned:
            payload.skip()  # not asked for, or a get is fetching it itself
            return
        held = _Held(output_id, size, datetime.fromtimestamp(put_ms / 1000, UTC), max(compute_ms, 0), encoding == 1,
                     b"")
        if length > _WHOLE or size > _WHOLE:
            try:  # not under slot.landing: a get waits for the event, and take() must never wait on the wire
                slot.landed = self._land(action_id, held, _decoded(payload, size) if encoding == 1
                                         else payload.chunks())
            finally:
                payload.skip()  # what a decoder that stopped early left
            self._stats.add(prefetched=int(slot.landed == ARRIVED))
            self._settle(action_id, slot.landed)
            return
        held = held._replace(payload=frames.exact(length) if length else b"")
        with self._lock:
            slot.held = held
            self._holding[action_id] = length
            self._held_bytes += length
        self._stats.add(prefetched=1)
        self._settle(action_id, ARRIVED)
        self._feed()
        with self._lock:  # past hold_bytes, the stream waits for the landers to make room
            while self._held_bytes > self.settings.hold_bytes and not self._stop.is_set():
                self._room.wait(0.1)

    def _stale(self) -> bool:
        """Whether go's gets so far show the manifest stale (called under the lock)."""
        return self._asked_count >= _EVIDENCE and self._listed_count < self._asked_count * _FRESH

    def hold(self) -> None:
        """Land no more ahead of go, only what a get (``wait``) asks for: in a child, once its
        parent found the manifest stale (``lander.py``)."""
        with self._lock:
            self._ahead = False

    def _ahead_pays(self) -> bool:
        """Whether to land ahead of go (called under the lock): the manifest proved right, or too
        little is known yet and only a few entries are landed ahead; always when nobody asks, never
        once told to hold."""
        if self._ahead is not None:
            return self._ahead
        if self._asked_count >= _EVIDENCE:
            return not self._stale()
        return len(self._landed) + self._in_flight < _LEAD

    def _feed(self) -> None:
        """Start landers while there is work for them: landing ahead pays, or memory is short."""
        with self._lock:
            start = 0
            if self._held_bytes > self.settings.hold_bytes or self._ahead_pays():
                start = min(_LANDERS - self._landing, len(self._holding))
            self._landing += start
        for _ in range(start):
            self._landers.submit(self._land_held)

    def _land_held(self) -> None:
        """Land held entries, oldest first, until there are none, landing ahead stops paying or the
        prefetch stopped (a get for a held entry still lands it itself)."""
        while True:
            with self._lock:
                if not self._holding or self._stop.is_set() or (
                        self._held_bytes <= self.settings.hold_bytes and not self._ahead_pays()):
                    self._landing -= 1
                    return
                action_id = next(iter(self._holding))
                self._held_bytes -= self._holding.pop(action_id)
                self._room.notify_all()
                slot = self._slots[action_id]
                self._in_flight += 1
            try:
                self._land_slot(action_id, slot)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _land_slot(self, action_id: bytes, slot: _Slot) -> str:
        """Land a held entry once, whoever comes first; how it went (``_Slot.landed``)."""
        with slot.landing:
            with self._lock:
                held, slot.held = slot.held, None
                if action_id in self._holding:
                    self._held_bytes -= self._holding.pop(action_id)
                    self._room.notify_all()
            if held is not None:
                slot.landed = self._land(action_id, held, None)
            return slot.landed

    def _land(self, action_id: bytes, held: _Held, chunks: Iterable[bytes] | None) -> str:
        """Land one entry: ``chunks`` from the stream (``land``), or None for the held payload.

        ARRIVED; or FETCH when it could not be written (the get asks the gate alone); or ABSENT
        when it is corrupt: counted and reported once here, and a miss for go, since asking the
        gate alone would bring the same stored bytes again. Once L1 cannot be written (a full
        disk), entries land in the cache's scratch directory, as the gets' own fetches do, and a
        held entry is landed there at once (one from the stream has moved on: it is fetched).
        RemoteError from the stream passes. The reporter, if any, hears how it went.
        """
        import zstandard

        try:
            if chunks is not None:
                entry = self._in_store(lambda store: land(store, action_id, held.output_id, held.size,
                                                          held.put_time, chunks), False)
            else:
                entry = self._in_store(lambda store: _land_whole(store, action_id, held), True)
        except L1Error:
            if self.reporter is not None:
                self.reporter.settled(action_id, FETCH)
            return FETCH
        except zstandard.ZstdError:
            entry = None
        if entry is None:
            self._stats.add(corrupt=1)
            self._report_corrupt(action_id)
            self._say_once("corrupt", f"discarded a prefetched entry whose body does not match its digest "
                                      f"(action {action_id.hex()[:16]}…)")
            if self.reporter is not None:
                self.reporter.settled(action_id, ABSENT)
            return ABSENT
        with self._lock:
            self._landed[action_id] = (entry, held.compute_ms)
            self.landed += 1
        if self.reporter is not None:
            self.reporter.landed(action_id, entry, held.compute_ms)
        return ARRIVED

    def _settle(self, action_id: bytes, state: str) -> None:
        with self._lock:
            slot = self._slots.get(action_id)
            if slot is None or slot.settled:
                return
            slot.state = state
            slot.settled = True
            event = slot.event
        if event is not None:
            event.set()
