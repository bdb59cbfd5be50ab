"""Fresh places to keep entries, and gates in front of them: what the remote scenarios share.

A ``Store`` is an empty storage directory (local backend) or an empty bucket on one
fake-gcs-server that lives as long as the ``Backends`` block (gcs backend). Several gates may be
started on one store in turn, e.g. one that fills it and one that reads it through the latency
proxy; each gate is a fresh process, so nothing cached in a gate carries over.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from .runner import Context
from .servers import Emulator, Gate, emulator, gate, latency_proxy
from .tools import Tools

__all__ = ["Backends", "Kind", "Store"]

Kind = Literal["local", "gcs"]


@dataclass(frozen=True)
class Store:
    kind: Kind
    storage: dict[str, object]  # the gate config's storage section
    bucket: str | None = None


class Backends:
    """Stores and gates for one scenario; the emulator and proxies start on first use."""

    def __init__(self, ctx: Context, tools: Tools) -> None:
        self._ctx = ctx
        self._tools = tools
        self._stack = ExitStack()
        self._emulator: Emulator | None = None
        self._proxies: dict[float, str] = {}
        self._buckets = 0

    def __enter__(self) -> Backends:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    @property
    def emulator(self) -> Emulator:
        if self._emulator is None:
            binary = self._tools.get("fake-gcs-server")
            self._emulator = self._stack.enter_context(emulator(binary, self._ctx.scratch("emulator")))
        return self._emulator

    def store(self, kind: Kind) -> Store:
        """An empty store of ``kind``."""
        if kind == "local":
            return Store("local", {"backend": "local", "path": str(self._ctx.scratch("local-store"))})
        self._buckets += 1
        bucket = self.emulator.bucket(f"bench-{self._buckets}")
        return Store("gcs", {"backend": "gcs", "bucket": bucket, "project": "bench"}, bucket)

    @contextmanager
    def gate(self, store: Store, latency_ms: float = 0) -> Iterator[Gate]:
        """A new gate process on ``store``; with ``latency_ms``, every storage call waits that long."""
        env: dict[str, str] = {}
        if store.kind == "gcs":
            env = self.emulator.gate_env(self._proxy(latency_ms) if latency_ms else None)
        with gate(self._ctx.scratch(f"gate-{store.kind}"), store.storage, env) as running:
            yield running

    def discard(self, store: Store) -> None:
        """Free what ``store`` holds once no gate uses it any more."""
        if store.bucket is None:
            self._ctx.discard(Path(str(store.storage["path"])))
        else:
            self.emulator.drop(store.bucket)

    def _proxy(self, latency_ms: float) -> str:
        if latency_ms not in self._proxies:
            proxy = latency_proxy(self._tools.get("latencyproxy"), self.emulator.url, latency_ms,
                                  self._ctx.scratch("latency-proxy"))
            self._proxies[latency_ms] = self._stack.enter_context(proxy).url
        return self._proxies[latency_ms]
