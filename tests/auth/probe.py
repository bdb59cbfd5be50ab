"""What a test asks a running gate besides the cache itself: its storage counters, from /metrics."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["bearer", "storage_writes"]


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def storage_writes(url: str) -> float:
    """Storage writes the gate attempted so far, whatever their outcome (metered storage, /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "gocachegate_storage_operations"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("op") == "write"
    )
