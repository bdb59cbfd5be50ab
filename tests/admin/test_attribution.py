"""Storage operations charged to the right row, on a real local backend: to the request that bound
them (and the tasks it starts after), to the namespace of the entry when nobody claimed them, and
never to a request that merely inherited someone else's unclaimed tally."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.storage.local import LocalStorage
from server.usage.attribution import AttributedStorage, bind_current
from server.usage.counters import GATE, GATE_DIMS, Dims

pytestmark = pytest.mark.anyio

KEY = "ac/team.a/ab/" + "ab" * 32
REQUEST = Dims("team.a", "ci-reader", "pull-build", "presubmit")


class Sink:
    def __init__(self) -> None:
        self.charged: dict[tuple[Dims, str], int] = {}

    def __call__(self, dims: Dims, op_class: str, n: int) -> None:
        self.charged[dims, op_class] = self.charged.get((dims, op_class), 0) + n


async def test_a_request_and_what_it_starts_are_charged_to_it(tmp_path: Path) -> None:
    sink = Sink()
    storage = AttributedStorage(LocalStorage(tmp_path, fsync=False), sink)

    async def request() -> asyncio.Task[None]:
        await storage.read(KEY)  # a miss: one Class B read
        background = asyncio.create_task(storage.touch(KEY))  # like the retention touch of a hit
        bind_current(REQUEST)
        return background

    await (await asyncio.create_task(request()))
    assert sink.charged == {(REQUEST, "B"): 1, (REQUEST, "A"): 1}


async def test_what_nobody_claims_goes_to_the_entrys_namespace_or_the_gate(tmp_path: Path) -> None:
    sink = Sink()
    storage = AttributedStorage(LocalStorage(tmp_path, fsync=False), sink)

    async def unclaimed() -> None:
        await storage.stat(KEY)
        await storage.list("usage/v1/")
        await storage.check()

    await asyncio.create_task(unclaimed())
    assert sink.charged == {}  # held until the sweep (a flush, or every so many requests)
    storage.sweep()
    assert sink.charged == {(Dims("team.a", GATE, "", ""), "B"): 1, (GATE_DIMS, "A"): 1, (GATE_DIMS, "B"): 1}


async def test_an_inherited_unclaimed_tally_is_not_shared(tmp_path: Path) -> None:
    sink = Sink()
    storage = AttributedStorage(LocalStorage(tmp_path, fsync=False), sink)
    await storage.stat(KEY)  # the server's own task leaves an unclaimed tally in its context

    async def request(dims: Dims) -> None:  # tasks made from that context inherit it
        await storage.read(KEY)
        bind_current(dims)

    other = REQUEST._replace(job="post-build")
    await asyncio.gather(asyncio.create_task(request(REQUEST)), asyncio.create_task(request(other)))
    storage.sweep()
    assert sink.charged[REQUEST, "B"] == 1 and sink.charged[other, "B"] == 1
    assert (Dims("team.a", GATE, "", ""), "B") not in sink.charged  # the outer task is still running
