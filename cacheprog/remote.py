"""The gate's HTTP API as the helper uses it: get an entry, put an entry, post a session.

It speaks HTTP with the standard library's ``http.client`` over a small pool of kept-alive
connections, because go waits for every helper it starts: httpx costs about 60 ms to import and
more CPU per request, ``http.client`` about 11 ms, and that import runs on a background thread
while go is still loading packages (cli.py), not on the way to the first answer.
Every failure becomes a ``RemoteError``; after a few failures in a row the circuit opens and the
rest of the invocation does not ask the gate again, so a dead gate costs milliseconds. A call that
timed out opens it at once: go asks for entries one or two at a time, so waiting for three
timeouts of a stalled gate cost every go command three timeouts (15 s) instead of one.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import http.client

    from .config import Config
from urllib.parse import urlsplit

from .tokens import TokenSource

__all__ = ["CorruptBody", "Download", "PrefetchStream", "Refused", "Remote", "RemoteError", "RemoteUnavailable",
           "remote_for"]

_CONNECT_TIMEOUT_S = 1.0
_BREAKER_THRESHOLD = 3
_CHUNK = 1 << 16
_IDLE_S = 4.0  # servers close idle keep-alive connections (uvicorn after 5 s): do not reuse older ones

#: The job metadata sent with every request, for usage attribution only (rights come from the token).
JOB_HEADERS = {"JOB_NAME": "X-Gocachegate-Job", "JOB_TYPE": "X-Gocachegate-Job-Type",
               "BUILD_ID": "X-Gocachegate-Build-Id"}


class RemoteError(Exception):
    """The gate did not give a usable answer; a get becomes a miss, an upload is dropped."""


class RemoteUnavailable(RemoteError):
    """The circuit is open: the gate failed repeatedly and is not asked again in this run."""


class CorruptBody(RemoteError):
    """The gate sent a whole body that is not the entry (it does not decode, or decodes short)."""


class Refused(RemoteError):
    """The gate refused the identity (401 after a token refresh) or the action (403)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status


def bounded_chunks(reader: _Readable, size: int) -> Iterator[bytes]:
    """Chunks of ``reader`` up to ``size`` + 1 bytes in all: one more than promised shows a bomb
    or a lie without reading the rest."""
    left = size + 1
    while left > 0:
        chunk = reader.read(min(_CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


class Download:
    """A hit being received: headers known, body still on the wire (read it with ``chunks``)."""

    def __init__(self, output_id: bytes, size: int, put_time: datetime | None, compute_ms: int,
                 response: http.client.HTTPResponse, release: Callable[[bool], None]) -> None:
        self.output_id = output_id
        self.size = size  # decoded size, from X-Go-Size
        self.put_time = put_time
        self.compute_ms = compute_ms
        self.wire_bytes = 0
        self._response = response
        self._release = release

    def chunks(self) -> Iterator[bytes]:
        """Decoded body chunks; never more than ``size`` + 1 bytes in all (a bomb stops there)."""
        import http.client

        raw: _Readable = _Counting(self._response, self)
        undecodable: tuple[type[Exception], ...] = ()
        if (self._response.getheader("Content-Encoding") or "").lower() == "zstd":
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(raw, read_size=_CHUNK)  # type: ignore[arg-type]
            undecodable = (zstandard.ZstdError,)
        received = 0
        try:
            for chunk in bounded_chunks(raw, self.size):
                received += len(chunk)
                yield chunk
        except (http.client.HTTPException, OSError) as exc:
            raise RemoteError(f"body: {exc or type(exc).__name__}") from exc
        except undecodable as exc:
            if self._cut_short():
                raise RemoteError(f"body cut short after {self.wire_bytes} bytes") from exc
            raise CorruptBody(f"body does not decode: {exc}") from exc
        if received < self.size:
            # http.client ends a short body quietly: a transport failure when bytes that
            # Content-Length promised never came, else a body that decodes short (corrupt).
            if self._cut_short():
                raise RemoteError(f"body cut short: {received} of {self.size} bytes")
            raise CorruptBody(f"body decodes to {received} bytes, X-Go-Size says {self.size}")

    def _cut_short(self) -> bool:
        return bool(self._response.length)  # bytes Content-Length announced that are still missing

    def finish(self, ok: bool) -> None:
        """Return the connection to the pool when the body was read whole, else close it."""
        self._release(ok and self._response.isclosed() and not self._response.will_close)


class PrefetchStream:
    """The gate's answer to a prefetch, being received (docs/prefetch.md has its frames)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse,
                 release: Callable[[bool], None]) -> None:
        self.wire_bytes = 0
        self._conn = conn
        self._response = response
        self._release = release

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, as soon as some are here; b"" at the end. Raises RemoteError."""
        import http.client

        try:
            data = self._response.read1(n)
        except (http.client.HTTPException, OSError, ValueError) as exc:
            raise RemoteError(f"prefetch stream: {exc or type(exc).__name__}") from exc
        self.wire_bytes += len(data)
        return data

    def abort(self) -> None:
        """Cut the stream from another thread: a read blocked on it returns or raises at once."""
        import socket

        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def finish(self, ok: bool) -> None:
        """Keep the connection when the stream was read to its end, else close it."""
        self._release(ok and self._response.isclosed() and not self._response.will_close)


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Counting:
    """A file-like view of the response that counts bytes on the wire."""

    def __init__(self, response: http.client.HTTPResponse, download: Download) -> None:
        self._response = response
        self._download = download

    def read(self, n: int = -1) -> bytes:
        data = self._response.read(n)
        self._download.wire_bytes += len(data)
        return data


class _Pool:
    """Kept-alive connections to one host; a stale one is retried once on a fresh connection."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []  # (last used, connection)
        self._lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        import http.client  # imported in the background at start-up (cli.py); here it is a lookup

        conn: http.client.HTTPConnection
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=_CONNECT_TIMEOUT_S)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=_CONNECT_TIMEOUT_S)
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self.timeout)
        return conn

    def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        import http.client

        for attempt in (0, 1):
            conn = self._take_idle() if attempt == 0 else None  # a retry always opens a new one
            reused = conn is not None
            try:
                if conn is None:
                    conn = self._connect()
                conn.request(method, self.base + path, body=body, headers=dict(headers))
                return conn, conn.getresponse()
            except (http.client.HTTPException, OSError) as exc:
                if conn is not None:
                    conn.close()
                stale = isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                         BrokenPipeError, http.client.BadStatusLine))
                if reused and stale and attempt == 0:
                    continue
                raise RemoteError(f"{method} {path}: {exc or type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def _take_idle(self) -> http.client.HTTPConnection | None:
        """The most recently used idle connection, unless the server has likely closed it."""
        now = time.monotonic()
        with self._lock:
            while self._idle:
                last_used, conn = self._idle.pop()
                if now - last_used < _IDLE_S:
                    return conn
                conn.close()
        return None

    def release(self, conn: http.client.HTTPConnection, reuse: bool) -> None:
        if reuse:
            with self._lock:
                self._idle.append((time.monotonic(), conn))
        else:
            conn.close()


class Remote:
    def __init__(self, url: str, namespace: str, tokens: TokenSource | None, timeout: float,
                 job: Mapping[str, str]) -> None:
        self._pool = _Pool(url, timeout)
        self._prefix = f"/v1/ns/{namespace}"
        self._tokens = tokens
        self._job_headers = {JOB_HEADERS[k]: v for k, v in job.items() if k in JOB_HEADERS}
        self._failures = 0
        self._lock = threading.Lock()
        self.open_reason: str | None = None  # set when the circuit opened

    # -- the circuit -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.open_reason is not None:
            raise RemoteUnavailable(self.open_reason)

    def failed(self, exc: RemoteError) -> None:
        """Count a failure (also one met while reading a body); a timeout opens the circuit at once."""
        stalled = isinstance(exc.__cause__, TimeoutError)
        with self._lock:
            self._failures += 1
            if (stalled or self._failures >= _BREAKER_THRESHOLD) and self.open_reason is None:
                self.open_reason = f"no answer within the timeout: {exc}" if stalled else str(exc)

    def _succeeded(self) -> None:
        self._failures = 0

    def disable(self, reason: str) -> None:
        """Stop asking the gate for the rest of this run (it refused our identity)."""
        with self._lock:
            if self.open_reason is None:
                self.open_reason = reason

    # -- requests ----------------------------------------------------------------------------------

    def _headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {**self._job_headers, **extra}
        token = self._tokens.token() if self._tokens is not None else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _send(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """One request with the circuit and the token's refresh-once-on-401 rule applied."""
        self._check_open()
        for attempt in (0, 1):
            try:
                conn, resp = self._pool.request(method, path, body, self._headers(headers))
            except RemoteError as exc:
                self.failed(exc)
                raise
            if resp.status == 401 and attempt == 0 and self._tokens is not None:
                self._drain(conn, resp)
                self._tokens.refresh()
                continue
            if resp.status >= 500:
                reason = self._answered(conn, resp, reuse=False)
                error = RemoteError(f"{method} {path}: {resp.status} {reason}")
                self.failed(error)
                raise error
            self._succeeded()
            if resp.status in (401, 403):
                raise Refused(resp.status, self._answered(conn, resp))
            return conn, resp
        raise AssertionError("unreachable")

    def _drain(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        """Read an answer's body to its end, so that its connection can carry the next request.
        Raises RemoteError: a gate that dies while it sends a miss broke the connection, and a
        get must still end as a miss (go waits for every get's answer)."""
        import http.client

        try:
            resp.read()
        except (http.client.HTTPException, OSError) as exc:
            self._pool.release(conn, reuse=False)
            error = RemoteError(f"the answer broke off: {exc or type(exc).__name__}")
            error.__cause__ = exc  # before ``failed``, which tells a stall by it
            self.failed(error)
            raise error from exc
        self._pool.release(conn, reuse=not resp.will_close)

    def _answered(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, reuse: bool = True) -> str:
        """What an answer whose body nobody needs says (its JSON error, else its status phrase),
        the body read; the connection goes back to the pool (kept if ``reuse`` and the body came
        whole). Never raises: a body cut short leaves the status phrase."""
        import http.client

        try:
            body = resp.read()
        except (http.client.HTTPException, OSError):
            self._pool.release(conn, reuse=False)
            return str(resp.reason)
        self._pool.release(conn, reuse=reuse and not resp.will_close)
        return _reason(body, resp.reason)

    def get(self, action_hex: str) -> Download | None:
        """A hit to read, or None for a miss. Raises RemoteError."""
        conn, resp = self._send("GET", f"{self._prefix}/actions/{action_hex}", None,
                                {"Accept-Encoding": "zstd"})
        if resp.status == 404:
            self._drain(conn, resp)
            return None
        if resp.status != 200:
            reason = self._answered(conn, resp, reuse=False)
            raise RemoteError(f"GET {action_hex}: unexpected {resp.status} {reason}")
        try:
            output_id = bytes.fromhex(resp.getheader("X-Go-Output-Id") or "")
            size = int(resp.getheader("X-Go-Size") or "")
            put_time = resp.getheader("X-Go-Put-Time")
            compute = resp.getheader("X-Go-Compute-Ms")
            if len(output_id) != 32 or size < 0:
                raise RemoteError(f"GET {action_hex}: bad X-Go-Output-Id or X-Go-Size")
            return Download(
                output_id=output_id,
                size=size,
                put_time=_parse_time(put_time),
                compute_ms=int(compute) if compute and compute.isdigit() else 0,
                response=resp,
                release=lambda reuse: self._pool.release(conn, reuse=reuse),
            )
        except (ValueError, RemoteError) as exc:
            self._pool.release(conn, reuse=False)
            raise RemoteError(str(exc)) from exc

    def put(self, action_hex: str, output_hex: str, size: int, payload: bytes, encoding: str,
            compute_ms: int | None) -> bool:
        """Upload an entry; True if the gate stored it, False if it had it. Raises RemoteError."""
        headers = {"X-Go-Output-Id": output_hex, "X-Go-Size": str(size),
                   "Content-Type": "application/octet-stream"}
        if encoding != "identity":
            headers["Content-Encoding"] = encoding
        if compute_ms is not None:
            headers["X-Go-Compute-Ms"] = str(compute_ms)
        conn, resp = self._send("PUT", f"{self._prefix}/actions/{action_hex}", payload, headers)
        status, reason = resp.status, self._answered(conn, resp)
        if status in (200, 201):
            return status == 201
        raise RemoteError(f"PUT {action_hex}: {status} {reason}")

    def get_manifest(self, key: str) -> bytes | None:
        """The stored manifest of ``key``, or None when there is none. Raises RemoteError."""
        import http.client

        conn, resp = self._send("GET", f"{self._prefix}/manifests/{key}", None, {})
        if resp.status != 200:
            reason = self._answered(conn, resp)
            if resp.status == 404:
                return None
            raise RemoteError(f"GET manifest: unexpected {resp.status} {reason}")
        try:
            body = resp.read()
        except (http.client.HTTPException, OSError) as exc:
            self._pool.release(conn, reuse=False)
            raise RemoteError(f"GET manifest: {exc or type(exc).__name__}") from exc
        self._pool.release(conn, reuse=not resp.will_close)
        return body

    def put_manifest(self, key: str, manifest: bytes) -> None:
        """Store the manifest of ``key``, replacing the previous one. Raises RemoteError (Refused: 403)."""
        conn, resp = self._send("PUT", f"{self._prefix}/manifests/{key}", manifest,
                                {"Content-Type": "application/octet-stream"})
        status, reason = resp.status, self._answered(conn, resp)
        if status not in (200, 201, 204):
            raise RemoteError(f"PUT manifest: {status} {reason}")

    def open_prefetch(self, action_ids: bytes) -> PrefetchStream:
        """Ask for the entries of ``action_ids`` (32 bytes each) in one streamed answer. Raises RemoteError."""
        conn, resp = self._send("POST", f"{self._prefix}/prefetch", action_ids,
                                {"Content-Type": "application/octet-stream"})
        if resp.status != 200:
            raise RemoteError(f"POST prefetch: unexpected {resp.status} {self._answered(conn, resp)}")
        return PrefetchStream(conn, resp, lambda reuse: self._pool.release(conn, reuse=reuse))

    def post_session(self, report: Mapping[str, object]) -> None:
        body = json.dumps(report).encode()
        conn, resp = self._send("POST", f"{self._prefix}/sessions", body,
                                {"Content-Type": "application/json"})
        self._drain(conn, resp)


def _reason(body: bytes, phrase: str) -> str:
    """The gate's one-line reason from a JSON error body, or the status phrase."""
    try:
        data = json.loads(body or b"{}")
        reason = data.get("error") or data.get("detail") if isinstance(data, dict) else None
    except ValueError:
        reason = None
    return str(reason or phrase)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def remote_for(cfg: Config) -> Remote | None:
    """The gate of the settings, with the token source they name; None without a gate URL."""
    if cfg.url is None:
        return None
    from .tokens import FileToken, StaticToken

    tokens: TokenSource | None = None
    if cfg.token_file:
        tokens = FileToken(cfg.token_file)
    elif cfg.token:
        tokens = StaticToken(cfg.token)
    elif cfg.auth == "google":
        from .google_token import GoogleIDToken

        tokens = GoogleIDToken(cfg.audience or cfg.url)
    return Remote(cfg.url, cfg.namespace, tokens, cfg.timeout, cfg.job)
