"""Running the gate under uvicorn: one bound socket, the app's lifespan, and a drain on SIGTERM.

The CLI binds the socket and enters the lifespan itself (uvicorn runs with ``lifespan="off"``), so
every startup failure (port taken, storage unusable) surfaces here as an exception the CLI prints
as one line, instead of a traceback in uvicorn's log.

A client must keep its request moving: uvicorn times out idle keep-alive connections only, so a
client that connected and went quiet (before or within its headers, or halfway through a body)
held its connection, its task and up to a megabyte of spooled body for good. Here any pause
longer than ``server.client_timeout_seconds`` while a request arrives closes the connection
(a pause the gate caused by not reading, as when it waits on storage, does not count).

On SIGTERM readiness turns false first; requests are still served for ``server.drain_seconds``
(load balancers take a moment to notice), then uvicorn stops accepting, lets in-flight requests
finish within ``server.graceful_timeout_seconds``, and the lifespan closes storage. SIGINT skips
the drain; a second signal ends the drain at once.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import logging
import signal
import socket
import time
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .app import create_app, lifespan
from .config import Settings
from .lifecycle import Lifecycle

__all__ = ["StartupFailed", "bind", "serve"]

log = logging.getLogger("gocachegate")


class StartupFailed(Exception):
    """The gate could not start; the message is one line."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound before anything else, so a taken port fails fast and clearly)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise StartupFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


class _QuietClientTimeout(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request stops arriving."""

    client_timeout = 30.0
    _quiet: asyncio.TimerHandle | None = None

    def _watch(self) -> None:
        self._unwatch()
        self._quiet = self.loop.call_later(self.client_timeout, self._went_quiet)

    def _unwatch(self) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None

    def _went_quiet(self) -> None:
        self._quiet = None
        if self.flow is not None and self.flow.read_paused:
            self._watch()  # the gate is not reading (it waits on storage): not the client's pause
            return
        log.info("closing a connection whose request paused for over %gs", self.client_timeout)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._watch()

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._watch()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._watch()

    def on_message_complete(self) -> None:
        self._unwatch()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unwatch()
        super().connection_lost(exc)


def _http_protocol(client_timeout: float) -> type[asyncio.Protocol]:
    return type("QuietClientTimeout", (_QuietClientTimeout,), {"client_timeout": client_timeout})


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_seconds: float) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_seconds = drain_seconds
        self._exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after a clean shutdown,
        # and the process would end "killed by SIGTERM" instead of exiting 0.
        self._lifecycle.draining = True
        if self._exit_at is None and sig != signal.SIGINT and self._drain_seconds > 0:
            log.info("draining for %gs before shutting down", self._drain_seconds)
            self._exit_at = time.monotonic() + self._drain_seconds
        elif self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)


def _log_config(level: str) -> dict[str, Any]:
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["gocachegate"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def serve(settings: Settings, sock: socket.socket, *, access_log: bool) -> None:
    """Serve on ``sock`` until a signal ends it; raises StartupFailed if the gate cannot start."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=_http_protocol(settings.server.client_timeout_seconds),
        lifespan="off",
        log_config=_log_config(settings.server.log_level),
        log_level=settings.server.log_level,
        access_log=access_log,
        server_header=False,
        timeout_graceful_shutdown=int(settings.server.graceful_timeout_seconds),
    )
    server = _DrainingServer(config, app.state.lifecycle, settings.server.drain_seconds)
    entered = False

    async def main() -> None:
        nonlocal entered
        async with lifespan(app):
            entered = True
            host, port = sock.getsockname()[:2]
            log.info(
                "gocachegate serving on %s:%s (storage %s, auth %s)",
                host,
                port,
                settings.storage.backend,
                "configured" if settings.auth is not None else "none: anonymous admin on loopback",
            )
            await server.serve(sockets=[sock])

    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(main())
    except Exception as exc:
        if entered:
            raise
        raise StartupFailed(f"cannot start: {exc}") from exc
