"""The protocol loop: read requests from go, answer each as soon as its answer is known.

Local hits and puts are answered inline (a few syscalls); gets that must ask the gate run on
worker threads and are answered out of order when they finish, which the protocol allows.
The loop knows the wire and the cache's three calls, nothing of HTTP.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import partial
from typing import BinaryIO

from .cache import Cache
from .l1 import L1Entry, L1Error
from .wire import ProtocolError, Request, Response, decode_body, parse_request
from .workers import Workers

__all__ = ["serve"]

_GET_THREADS = 32


class _Writer:
    """Whole response lines to go, one at a time, straight to the file descriptor."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, response: Response) -> None:
        data = memoryview(response.encode())
        with self._lock:
            while data:
                data = data[os.write(self._fd, data):]


def _hit(request: Request, entry: L1Entry | None) -> Response:
    if entry is None:
        return Response(request.id, miss=True)
    return Response(request.id, output_id=entry.output_id, size=entry.size, time=entry.put_time,
                    disk_path=entry.path)


def _release(stdout_fd: int) -> None:
    """Close our end of go's pipe once close is answered: go waits for it to close before it exits,
    and the interpreter's own exit takes another 7-11 ms (/dev/null takes the descriptor's place,
    so nothing at exit writes to a closed one)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return  # go sees the end when this process exits, as it did before
    try:
        os.dup2(devnull, stdout_fd)
    finally:
        os.close(devnull)


def _next_line(stdin: BinaryIO) -> bytes:
    """The next line that is not empty (go writes an empty line after each request object)."""
    line = stdin.readline()
    while line in (b"\n", b"\r\n"):
        line = stdin.readline()
    return line


def serve(cache: Cache, stdin: BinaryIO, stdout_fd: int) -> None:
    """Answer requests until go sends close or closes our stdin."""
    writer = _Writer(stdout_fd)
    gets = Workers("get", _GET_THREADS)

    def fetch(request: Request) -> None:
        try:
            entry = cache.fetch(request.action_id)
        except Exception as exc:  # noqa: BLE001 - a bug: go waits for every answer, for ever
            cache.say_once("fetch", f"a get failed inside the helper ({type(exc).__name__}: {exc}); "
                                    f"answered as a miss")
            entry = None
        writer.send(_hit(request, entry))

    while True:
        line = stdin.readline()
        if not line:
            break  # go closed our stdin: it is gone, nothing is waiting for answers
        if not line.strip():
            continue  # go writes an empty line after each request
        try:
            request = parse_request(line)
            body = decode_body(_next_line(stdin), request) if request.body_size > 0 else b""
        except ProtocolError as exc:
            if exc.request_id is not None:
                writer.send(Response(exc.request_id, err=str(exc)))
            else:
                cache.say_once("protocol", f"ignored a request that cannot be read: {exc}")
            continue

        if request.command == "get":
            if len(request.action_id) != 32:
                writer.send(Response(request.id, err="get without ActionID"))
                continue
            entry, ask_remote = cache.lookup(request.action_id)
            if ask_remote:
                gets.submit(partial(fetch, request))
            else:
                writer.send(_hit(request, entry))
        elif request.command == "put":
            if len(request.action_id) != 32 or len(request.output_id) != 32:
                writer.send(Response(request.id, err="put without ActionID and OutputID"))
                continue
            if hashlib.sha256(body).digest() != request.output_id:  # L1 names bodies by their digest
                writer.send(Response(request.id, err="put: OutputID is not the SHA-256 of the body"))
                continue
            try:
                entry = cache.put(request.action_id, request.output_id, body)
            except L1Error as exc:
                writer.send(Response(request.id, err=f"gocacheprog: {exc}"))
                continue
            writer.send(Response(request.id, disk_path=entry.path))
        elif request.command == "close":
            gets.drain(None)  # every remote get is bounded by the remote timeouts
            cache.close()
            writer.send(Response(request.id))
            _release(stdout_fd)
            break
        else:
            writer.send(Response(request.id, err=f"unknown command {request.command!r}"))
