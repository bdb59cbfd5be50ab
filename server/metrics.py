"""The gate's Prometheus metrics, one registry per app, and the request-counting middleware.

A registry per app (not the process-wide default) so that several apps in one process, as in
tests, never collide. Label children are cached: ``labels()`` takes a lock and builds a key on
every call, which shows on the hit path.

Request counting is a pure ASGI middleware (``BaseHTTPMiddleware`` costs a task and a queue per
request); the route label is the matched route's name, or ``unmatched``, so a scan of random
paths cannot blow up the label set.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .storage.metered import StorageMetrics

__all__ = ["CONTENT_TYPE_LATEST", "GateMetrics", "RequestMetricsMiddleware"]

# The ``*_created`` series double the output and no dashboard here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Children:
    """``metric.labels(*values)``, memoized."""

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class GateMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        self.storage = StorageMetrics(reg)

        self.requests = _Children(
            Counter(
                "gocachegate_requests",
                "HTTP requests by route and status code.",
                ["route", "code"],
                registry=reg,
            )
        )
        self.request_seconds = _Children(
            Histogram(
                "gocachegate_request_duration_seconds",
                "Time to answer a request, body included.",
                ["route"],
                registry=reg,
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            )
        )
        self.hits = _Children(
            Counter("gocachegate_cache_hits", "Gets answered with an entry.", ["namespace"], registry=reg)
        )
        self.misses = _Children(Counter("gocachegate_cache_misses", "Gets answered 404.", ["namespace"], registry=reg))
        self.puts = _Children(
            Counter(
                "gocachegate_cache_puts",
                "Puts by result: new (stored), present (already there), rejected (4xx).",
                ["namespace", "result"],
                registry=reg,
            )
        )
        self.corrupt = _Children(
            Counter(
                "gocachegate_cache_corrupt_entries",
                "Stored entries found unreadable on a get (answered as a miss and removed).",
                ["namespace"],
                registry=reg,
            )
        )
        self.bytes_sent = _Children(
            Counter(
                "gocachegate_cache_bytes_sent",
                "Entry bytes sent to clients, as on the wire.",
                ["namespace"],
                registry=reg,
            )
        )
        self.bytes_received = _Children(
            Counter(
                "gocachegate_cache_bytes_received",
                "Entry bytes received from clients, as on the wire.",
                ["namespace"],
                registry=reg,
            )
        )
        self.sessions = _Children(
            Counter(
                "gocachegate_sessions",
                "Helper sessions (one go invocation each) reported.",
                ["namespace"],
                registry=reg,
            )
        )
        self.session_counts = _Children(
            Counter(
                "gocachegate_session_counts",
                "Sums of the counters helpers report at the end of each go invocation.",
                ["namespace", "field"],
                registry=reg,
            )
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def count_request(self, route: str, status: int, seconds: float) -> None:
        self.requests(route, str(status)).inc()
        self.request_seconds(route).observe(seconds)


class RequestMetricsMiddleware:
    """Counts every HTTP request by route and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: GateMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route = getattr(scope.get("route"), "name", None) or "unmatched"
            self.metrics.count_request(route, status, time.perf_counter() - started)
