"""A loopback TCP proxy in front of a real gate that kills the gate in the middle of a prefetch.

It forwards bytes both ways untouched. Once a client has sent ``POST /v1/ns/.../prefetch``, it
passes on ``cut_after`` bytes of the gate's answer, then SIGKILLs the gate and hangs up on that
client: the helper sees the gate die mid-stream, and every later request finds nobody there.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

__all__ = ["cutting_proxy"]


@contextmanager
def cutting_proxy(upstream_port: int, gate: subprocess.Popen[bytes], cut_after: int) -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    state = {"cut": False}
    lock = threading.Lock()

    def pipe(src: socket.socket, dst: socket.socket, watch_request: list[bool], answer: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if not answer and b"/prefetch HTTP/1.1" in data:
                    watch_request[0] = True
                if answer and watch_request[0]:
                    data = data[: max(0, cut_after - sent)]
                    sent += len(data)
                    if sent >= cut_after:
                        dst.sendall(data)
                        with lock:
                            if not state["cut"]:
                                state["cut"] = True
                                gate.send_signal(signal.SIGKILL)
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            src.close()

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            watch = [False]
            threading.Thread(target=pipe, args=(client, upstream, watch, False), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client, watch, True), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
