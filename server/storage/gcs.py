"""The ``gcs`` backend: one Google Cloud Storage object per key, as cheap as GCS allows.

What each call costs is the point of this module (see ``docs/storage-layout.md``):

- ``read`` is ONE media GET, streamed: no metadata request first (``x-goog-stored-content-length``
  gives the size), the first ``HEAD_BYTES`` read eagerly and the rest pulled chunk by chunk from
  the same response, checked against the object's CRC32C at the end. The library's own downloads
  either buffer the whole object (``download_as_bytes``) or issue a range request per chunk
  (``blob.open``), hence the GET here, through google-auth's urllib3 transport rather than the
  library's requests session: every hit and every prefetched entry is one, and requests' session
  machinery cost more CPU per read than the rest of the gate's hit path (0.9 ms against 0.5 ms
  per read, measured against the emulator with 64 reads in flight).
- ``write`` is ONE upload: single-request (multipart) up to 8 MiB, resumable above, so an upload
  that dies midway leaves no object. Custom metadata and ``customTime`` travel with it.
  ``create_only`` is ``ifGenerationMatch=0``: GCS itself decides which of two racing writers wins.
- ``touch`` is ONE metadata PATCH of ``customTime`` (Class A); the bucket's lifecycle rule
  ``daysSinceCustomTime`` deletes what nobody touched (``deploy/gcs/bucket-lifecycle.json``).

google-cloud-storage blocks, so every call runs in a thread pool of ``threads`` workers that share
one client and one ``AuthorizedSession`` whose urllib3 pool holds as many connections as there are
workers. The library retries transient failures within ``timeout_seconds``, and the awaiting
side gives up after that budget whatever the thread is doing: nothing hangs past it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import http.client
import io
import json
import os
import urllib.parse
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import BinaryIO, TypeVar

import certifi
import google.auth
import google_crc32c
import requests
import urllib3
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials, Credentials, with_scopes_if_required
from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError, TransportError
from google.auth.transport.requests import AuthorizedSession
from google.auth.transport.urllib3 import AuthorizedHttp
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.adapters import HTTPAdapter

from .base import HEAD_BYTES, Body, ListPage, ObjectInfo, ObjectReader, StorageError, StorageUnavailable
from .settings import StorageSettings

__all__ = ["GCSStorage"]

_T = TypeVar("_T")

_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
_CHUNK = 256 << 10  # bytes per step of a streamed read: one thread hop each
_MIN_UPLOAD_RATE = 1 << 20  # bytes/s an upload is granted on top of the time budget
_LIST_FIELDS = "items(name,size,metadata,updated,customTime),nextPageToken"
_NO_BUCKET_METADATA = "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"
_PROBE_NAME = ".gocachegate-readiness-probe"  # never written: a 404 that proves GCS answers
_TOKEN_TAG = b"gocachegate/gcs/page-token\0"

#: Failures worth a 503 and a later try. The library's retry already spent the budget on them.
_TRANSIENT = (
    api_exceptions.TooManyRequests,
    api_exceptions.ServerError,
    api_exceptions.RetryError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    http.client.HTTPException,
    ConnectionError,
    TransportError,
    urllib3.exceptions.HTTPError,
)
_LIBRARY_ERRORS = (
    *_TRANSIENT,
    api_exceptions.GoogleAPICallError,
    requests.RequestException,
    GoogleAuthError,
    InvalidResponse,
    DataCorruption,
    OSError,  # reading the body to upload
)


class GCSStorage:
    """A bucket (and optional prefix) behind the ``Storage`` protocol."""

    name = "gcs"

    def __init__(self, settings: StorageSettings) -> None:
        if not settings.bucket:
            raise StorageError("gcs: storage.bucket is required")
        self._prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        self._timeout = settings.timeout_seconds
        # (connect, read): a silent peer frees its thread after this, whatever the retry does next.
        self._http_timeout = (min(5.0, self._timeout), self._timeout)
        self._retry: Retry = DEFAULT_RETRY.with_timeout(self._timeout).with_delay(
            initial=0.05, maximum=max(0.05, self._timeout / 4)
        )
        # Since 3.11 the client GETs the bucket in the background, only to label OpenTelemetry
        # spans: once per client, again after every 404, and it needs storage.buckets.get. The
        # maintainers' opt-out is this variable (googleapis/google-cloud-python#17650).
        os.environ.setdefault(_NO_BUCKET_METADATA, "true")
        credentials, project = _credentials(settings.project)
        self._session = _session(credentials, settings.threads, self._timeout)
        self._media_http = AuthorizedHttp(  # type: ignore[no-untyped-call]
            credentials, urllib3.PoolManager(maxsize=settings.threads, ca_certs=certifi.where()))
        self._media_timeout = urllib3.Timeout(connect=self._http_timeout[0], read=self._http_timeout[1])
        self._client = storage.Client(project=project, credentials=credentials, _http=self._session)
        self._bucket = self._client.bucket(settings.bucket)
        self._media_base = f"{self._client.api_endpoint}/download/storage/v1{self._bucket.path}"
        self._pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="gcs")
        self._closed = False
        self._bucket_seen = False  # has a check() listed the bucket yet

    # -- Storage protocol --------------------------------------------------------------------

    async def read(self, key: str) -> ObjectReader | None:
        opened = await self._call(lambda: self._open(key), discard=_close_opened)
        if opened is None:
            return None
        media, head = opened
        if media.done:
            return ObjectReader(head=head, size=media.size)
        rest = self._stream(media)
        await anext(rest)  # start it, so that aclose() closes the response even if never read
        return ObjectReader(head=head, size=media.size, rest=rest)

    async def write(self, key: str, body: Body, size: int, metadata: Mapping[str, str], *, create_only: bool) -> bool:
        return await self._call(
            lambda: self._upload(key, body, size, metadata, create_only),
            budget=self._timeout + size / _MIN_UPLOAD_RATE,
        )

    async def stat(self, key: str) -> ObjectInfo | None:
        blob = await self._call(
            lambda: self._bucket.get_blob(self._name(key), retry=self._retry, timeout=self._http_timeout)
        )
        return None if blob is None else self._info(blob)

    async def delete(self, key: str) -> bool:
        def delete() -> bool:
            try:
                self._bucket.delete_blob(self._name(key), retry=self._retry, timeout=self._http_timeout)
            except api_exceptions.NotFound:
                return False
            return True

        return await self._call(delete)

    async def list(self, prefix: str, *, page_token: str | None = None, limit: int = 1000) -> ListPage:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        token = None if page_token is None else _open_token(prefix, page_token)

        def page() -> ListPage:
            listing = self._client.list_blobs(
                self._bucket,
                prefix=self._prefix + prefix,
                page_token=token,
                page_size=limit,
                fields=_LIST_FIELDS,
                retry=self._retry,
                timeout=self._http_timeout,
            )
            try:
                blobs = list(next(listing.pages, []))
            except api_exceptions.BadRequest as exc:
                if token is not None:
                    raise ValueError(f"page token refused by GCS: {exc.message}") from exc
                raise
            next_token = listing.next_page_token
            return ListPage(
                items=[self._info(blob) for blob in blobs],
                next_token=None if next_token is None else _seal_token(prefix, next_token),
            )

        return await self._call(page)

    async def touch(self, key: str) -> None:
        def touch() -> None:
            blob = self._bucket.blob(self._name(key))
            blob.custom_time = datetime.now(UTC)
            try:
                blob.patch(retry=self._retry, timeout=self._http_timeout)
            except api_exceptions.NotFound:
                return
            except api_exceptions.BadRequest:
                # GCS refuses to move customTime backwards: a replica whose clock runs ahead
                # touched it last, so the retention clock is already at least "now".
                return

        await self._call(touch)

    async def check(self) -> None:
        # Readiness runs every few seconds on every replica, so a check is one Class B metadata
        # read of a name that never exists: 404 is the healthy answer, and it needs no permission
        # beyond objects.get. A 404 cannot tell a missing bucket from a missing object, so the
        # first check lists instead (Class A, once per process), proving the bucket is there.
        def probe() -> None:
            if self._bucket_seen:
                self._bucket.get_blob(self._name(_PROBE_NAME), retry=self._retry, timeout=self._http_timeout)
                return
            listing = self._client.list_blobs(
                self._bucket,
                prefix=self._prefix,
                max_results=1,
                fields="items(name),nextPageToken",
                retry=self._retry,
                timeout=self._http_timeout,
            )
            next(listing.pages, None)
            self._bucket_seen = True

        await self._call(probe)

    async def aclose(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
        self._media_http.http.clear()

    # -- blocking halves, run in the pool ----------------------------------------------------

    def _open(self, key: str) -> tuple[_Media, bytes] | None:
        """One media GET with its first ``HEAD_BYTES`` read; retried whole until the head is in."""
        url = f"{self._media_base}/o/{urllib.parse.quote(self._name(key), safe='~')}?alt=media"

        def attempt() -> tuple[_Media, bytes] | None:
            response: urllib3.BaseHTTPResponse = self._media_http.urlopen(  # type: ignore[no-untyped-call]
                "GET", url, preload_content=False, retries=False, timeout=self._media_timeout)
            if response.status == http.client.NOT_FOUND:
                response.drain_conn()  # a short JSON error: read, so the connection is kept
                response.release_conn()
                return None
            if response.status != http.client.OK:
                text = response.read(4096).decode(errors="replace")
                response.close()
                raise api_exceptions.from_http_status(  # type: ignore[no-untyped-call]
                    response.status, f"GET {url}: {text}")
            media = _Media(response)
            try:
                return media, media.read_head(HEAD_BYTES)
            except BaseException:
                media.close()
                raise

        opened: tuple[_Media, bytes] | None = self._retry(attempt)()
        return opened

    def _upload(self, key: str, body: Body, size: int, metadata: Mapping[str, str], create_only: bool) -> bool:
        blob = self._bucket.blob(self._name(key))
        blob.metadata = dict(metadata)
        blob.custom_time = datetime.now(UTC)  # the retention clock starts at creation
        try:
            blob.upload_from_file(
                _sized(body, size),
                size=size,
                if_generation_match=0 if create_only else None,
                checksum="crc32c",
                retry=self._retry,
                timeout=self._http_timeout,
            )
        except api_exceptions.PreconditionFailed:
            return False  # create-only and the object exists: nothing was written
        return True

    async def _stream(self, media: _Media) -> AsyncGenerator[bytes, None]:
        try:
            yield b""  # the priming step of read(); never reaches a caller
            if media.pending:
                yield media.pending
            while (chunk := await self._call(media.next_chunk)) is not None:
                yield chunk
        finally:
            media.close()

    # -- helpers ---------------------------------------------------------------------------------

    async def _call(
        self,
        fn: Callable[[], _T],
        *,
        budget: float | None = None,
        discard: Callable[[_T], None] | None = None,
    ) -> _T:
        """Run a blocking library call in the pool; library errors become storage errors.

        The caller stops waiting after the budget (or when cancelled); the thread cannot be
        stopped, so ``discard`` releases what it returns after nobody is left to take it.
        """
        if self._closed:
            raise StorageError("gcs: backend closed")
        limit = self._timeout if budget is None else budget
        future = self._pool.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), limit)
        except TimeoutError as exc:
            raise StorageUnavailable(f"gcs: no answer within {limit:g}s") from exc
        except _TRANSIENT as exc:
            raise StorageUnavailable(f"gcs: {exc}") from exc
        except _LIBRARY_ERRORS as exc:
            raise StorageError(f"gcs: {exc}") from exc
        finally:
            if discard is not None and not future.done():
                future.add_done_callback(lambda done: _discard_result(done, discard))

    def _name(self, key: str) -> str:
        return self._prefix + key

    def _info(self, blob: storage.Blob) -> ObjectInfo:
        return ObjectInfo(
            key=blob.name.removeprefix(self._prefix),
            size=blob.size or 0,
            metadata=dict(blob.metadata or {}),
            updated=blob.updated,
            custom_time=blob.custom_time,
        )


class _Media:
    """One streamed media response: its chunks in order, verified (length, CRC32C) at the end."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        length = response.headers.get("x-goog-stored-content-length") or response.headers.get("content-length")
        if length is None:
            response.close()
            raise ConnectionError("media response without a length")
        self.size = int(length)
        self._expected = _crc32c_of(response.headers.get("x-goog-hash", ""))
        self._crc = 0
        self._chunks: Iterator[bytes] = response.stream(_CHUNK, decode_content=False)
        self._received = 0
        self.pending = b""  # read past the head; the first piece of the rest
        self.done = False

    def read_head(self, size: int) -> bytes:
        parts: list[bytes] = []
        have = 0
        while have < size and (chunk := self.next_chunk()) is not None:
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self.pending = data[size:]
        if not self.pending and self._received == self.size:
            self.next_chunk()  # the end: verifies and hands the connection back to the pool
        return data[:size]

    def next_chunk(self) -> bytes | None:
        if self.done:
            return None
        chunk = next(self._chunks, None)
        if chunk is not None:
            self._received += len(chunk)
            self._crc = google_crc32c.extend(self._crc, chunk)
            return chunk
        self.done = True
        self.close()
        if self._received != self.size:
            raise ConnectionError(f"media response ended after {self._received} of {self.size} bytes")
        if self._expected is not None and self._crc.to_bytes(4, "big") != self._expected:
            raise DataCorruption(None, "media response does not match its CRC32C")
        return None

    def close(self) -> None:
        """Back to the pool when read to the end, else the connection is dropped."""
        if self._received == self.size and self.done:
            self._response.release_conn()
        else:
            self._response.close()


def _sized(body: Body, size: int) -> BinaryIO:
    """The body as a stream, refused if it cannot supply ``size`` bytes (the library would store
    whatever it got)."""
    if isinstance(body, bytes):
        if len(body) != size:
            raise ValueError(f"body is {len(body)} bytes, size says {size}")
        return io.BytesIO(body)
    start = body.tell()
    available = body.seek(0, io.SEEK_END) - start
    body.seek(start)
    if available < size:
        raise ValueError(f"body ends {size - available} bytes short of size {size}")
    return body


def _close_opened(opened: tuple[_Media, bytes] | None) -> None:
    if opened is not None:
        opened[0].close()


def _discard_result(done: Future[_T], discard: Callable[[_T], None]) -> None:
    if not done.cancelled() and done.exception() is None:
        discard(done.result())


def _crc32c_of(x_goog_hash: str) -> bytes | None:
    for part in x_goog_hash.split(","):
        name, _, value = part.strip().partition("=")
        if name == "crc32c":
            return base64.b64decode(value)
    return None


def _seal_token(prefix: str, token: str) -> str:
    """Wrap the API's page token with the listing's prefix and a checksum, so that a token from
    elsewhere (another prefix, another backend, a typo) is refused instead of silently restarting."""
    raw = json.dumps([prefix, token]).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(_TOKEN_TAG + raw).digest()[:8] + raw).decode()


def _open_token(prefix: str, sealed: str) -> str:
    try:
        data = base64.urlsafe_b64decode(sealed.encode())
        check, raw = data[:8], data[8:]
        if hashlib.sha256(_TOKEN_TAG + raw).digest()[:8] != check:
            raise ValueError("checksum")
        made_for, token = json.loads(raw)
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ValueError("not a page token of this gcs backend") from exc
    if made_for != prefix or not isinstance(token, str):
        raise ValueError("page token belongs to another listing")
    return token


def _credentials(project: str | None) -> tuple[Credentials, str | None]:
    """Application Default Credentials, or none at all for an emulator given no credential file."""
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or None
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if os.environ.get("STORAGE_EMULATOR_HOST") and not key_file:
        return AnonymousCredentials(), project  # type: ignore[no-untyped-call]
    try:
        # Asked for without scopes, then scoped: with scopes, google-auth asks Cloud Resource
        # Manager for the project of a Workload Identity Federation file unless the environment
        # names one, a call the gate neither needs nor may be allowed to make.
        credentials, found = google.auth.default()
        credentials = with_scopes_if_required(credentials, _SCOPES)  # type: ignore[no-untyped-call]
    except DefaultCredentialsError as exc:
        raise StorageError(f"gcs: no usable credentials: {exc}") from exc
    return credentials, project or found


def _session(credentials: Credentials, threads: int, timeout: float) -> AuthorizedSession:
    """One session for every thread: a keep-alive connection per worker, no hidden urllib3 retries."""
    session = AuthorizedSession(credentials, refresh_timeout=timeout)  # type: ignore[no-untyped-call]
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=threads, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
