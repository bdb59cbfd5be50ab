"""Where the process is in its life, for readiness: starting, serving, or draining."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lifecycle"]


@dataclass
class Lifecycle:
    started: bool = False  # the lifespan has built storage and auth
    draining: bool = False  # shutdown began (SIGTERM or lifespan exit): /readyz says 503 from now on
