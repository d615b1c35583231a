"""Fair queuing between tenants (API keys) in the batchers: a flood does not push a newcomer back, weights
set the shares, a tenant's queued sequences are capped, and grouped calls keep one tenant each."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from snapserve import tenants
from snapserve.scheduling.admission import QueueFull
from snapserve.scheduling.batch import BatchLimits
from snapserve.scheduling.coalescer import Coalescer
from snapserve.scheduling.device_batcher import DeviceBatcher


def tagged(tenant: str, count: int, length: int = 4) -> list[np.ndarray]:
    """Sequences whose first id says whose they are (1: a, 2: b, 3: c)."""
    return [np.full(length, " abc".index(tenant), dtype=np.int64) for _ in range(count)]


class Order:
    """A slow execute that records which tenant each row of each batch belonged to."""

    def __init__(self, delay: float = 0.005):
        self.rows: list[list[int]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def execute(self, work, instance):
        import time

        with self.lock:
            self.rows.append([int(s[0]) for s in work])
        time.sleep(self.delay)
        return [int(s[0]) for s in work]


def run(coro):
    return asyncio.run(coro)


def test_a_newcomer_is_served_next_despite_a_flood():
    order = Order()
    batcher = DeviceBatcher(None, order.execute, BatchLimits(max_batch_size=8, max_delay_ms=0))

    async def main():
        flood = asyncio.ensure_future(batcher.submit(tagged("a", 200), tenant="a"))
        await asyncio.sleep(0.02)  # a's first batches are running
        started = len(order.rows)
        assert await batcher.submit(tagged("b", 1), tenant="b") == [2]
        served_before_b = len(order.rows) - started
        await flood
        return served_before_b

    # b's row is in the second batch after it arrived at the latest (one may have been prepared already)
    assert run(main()) <= 2  # the batch staged behind the running one is formed again with b's first
    assert sum(len(r) for r in order.rows) == 201


def test_weights_set_each_tenants_share():
    order = Order(delay=0.001)
    batcher = DeviceBatcher(None, order.execute, BatchLimits(max_batch_size=4, max_delay_ms=0))

    async def main():
        await asyncio.gather(batcher.submit(tagged("a", 120), tenant="a", weight=1),
                             batcher.submit(tagged("b", 120), tenant="b", weight=3))

    run(main())
    first = [row for batch in order.rows for row in batch][:80]
    assert 55 <= first.count(2) <= 65, first  # b's share is 3/4 while both wait


def test_without_tenants_the_order_is_arrival_order():
    order = Order(delay=0)
    batcher = DeviceBatcher(None, order.execute, BatchLimits(max_batch_size=1, max_delay_ms=0))

    async def main():
        return await asyncio.gather(*(batcher.submit([np.full(3, i, dtype=np.int64)]) for i in range(1, 30)))

    run(main())
    assert [b[0] for b in order.rows] == list(range(1, 30))


def test_a_tenants_queued_sequences_are_capped_and_others_still_get_in():
    order = Order(delay=0.05)
    batcher = DeviceBatcher(None, order.execute, BatchLimits(max_batch_size=2, max_delay_ms=0, max_queue_sequences=100))

    async def main():
        first = asyncio.ensure_future(batcher.submit(tagged("a", 10), tenant="a", max_queued=10))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="this API key has"):
            batcher.admit(5, tenant="a", max_queued=10)
        batcher.admit(5, tenant="b", max_queued=10)  # another key is not refused
        await batcher.submit(tagged("b", 5), tenant="b", max_queued=10)
        await first

    run(main())


def test_grouped_calls_hold_one_tenant_and_a_waiting_tenant_is_not_held_behind_others():
    in_flight: list[str] = []
    most = {"total": 0}

    async def call(work, instance):
        whose = {int(s[0]) for s in work}
        assert len(whose) == 1, whose  # one tenant per call
        in_flight.append(str(whose))
        most["total"] = max(most["total"], len(in_flight))
        await asyncio.sleep(0.02)
        in_flight.pop()
        return [int(s[0]) for s in work]

    batcher = Coalescer(call, BatchLimits(max_batch_size=4, max_delay_ms=0, instances=1))

    async def main():
        flood = asyncio.ensure_future(batcher.submit(tagged("a", 40), tenant="a"))
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(tagged("b", 2), tenant="b")
        waited = loop.time() - started
        await flood
        return waited

    waited = run(main())
    assert waited < 0.2  # one call's time (20 ms) plus scheduling, not a's remaining ten calls
    assert most["total"] == 2  # a's call and b's beside it, beyond instances=1


def test_tenant_headers_round_trip_and_keys_file_options():
    tenant = tenants.Tenant("ab12cd34", 2.5, 300)
    assert tenants.from_headers(tenant.headers()) == tenant
    assert tenants.from_headers({}) == tenants.Tenant()
    assert tenants.options(["weight=2", "max_queued=50"]) == {"weight": 2.0, "max_queued": 50}
    with pytest.raises(ValueError, match="unknown key option"):
        tenants.options(["priority=1"])
    with pytest.raises(ValueError, match="weight"):
        tenants.Tenant("x", weight=0)


def test_batches_shrink_while_several_keys_send_work():
    """One key alone gets the full batches; once another key has sent work, batches keep to the
    shared limits, so the forward that key's requests wait behind stays short."""
    order = Order()
    limits = BatchLimits(max_batch_size=8, max_delay_ms=0, shared_batch_size=2)

    async def main():
        batcher = DeviceBatcher(None, order.execute, limits)
        await batcher.submit(tagged("a", 16), tenant="a")
        alone = list(order.rows)
        order.rows.clear()
        await asyncio.gather(batcher.submit(tagged("a", 16), tenant="a"), batcher.submit(tagged("b", 1), tenant="b"))
        return alone, list(order.rows)

    alone, shared = run(main())
    assert max(map(len, alone)) == 8
    assert max(map(len, shared)) <= 2 and sum(map(len, shared)) == 17
    assert [2] in shared  # b's sequence rode alone, not beside a's backlog


def test_without_keys_the_shared_limits_never_apply():
    order = Order()

    async def main():
        batcher = DeviceBatcher(None, order.execute, BatchLimits(max_batch_size=8, max_delay_ms=0, shared_batch_size=2))
        await asyncio.gather(*(batcher.submit(tagged("a", 8)) for _ in range(3)))

    run(main())
    assert max(map(len, order.rows)) == 8
