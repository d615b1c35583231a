"""The batchers alone (DeviceBatcher, and Coalescer's async calls): token budget, size cap, max delay, length grouping, order, isolation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from snapserve.scheduling.admission import QueueFull
from snapserve.scheduling.batch import BatchLimits, pick
from snapserve.scheduling.coalescer import Coalescer
from snapserve.scheduling.device_batcher import DeviceBatcher
from snapserve.scheduling.fair_queue import Request


def seqs(*lengths):
    return [np.arange(n, dtype=np.int64) + 1 for n in lengths]


class Recorder:
    """execute() that returns each sequence's (first id, length) and records batch shapes."""

    def __init__(self, delay=0.0, fail_on=None):
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()
        self.concurrent = 0
        self.max_concurrent = 0

    def prepare(self, sequences):
        return list(sequences)

    def execute(self, prepared, instance):
        with self.lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            self.batches.append([len(s) for s in prepared])
        try:
            if self.fail_on is not None and any(self.fail_on in s for s in prepared):
                raise ValueError("poisoned sequence")
            time.sleep(self.delay)
            return [(int(s.sum()), len(s)) for s in prepared]
        finally:
            with self.lock:
                self.concurrent -= 1


def run(coro):
    return asyncio.run(coro)


async def started(rec, **limits):
    b = DeviceBatcher(rec.prepare, rec.execute, BatchLimits(**limits))
    b.start()
    return b


def test_results_come_back_in_order_per_request():
    async def main():
        rec = Recorder()
        b = await started(rec, max_delay_ms=5)
        reqs = [seqs(5, 1, 3), seqs(2), seqs(7, 7)]
        out = await asyncio.gather(*(b.submit(r) for r in reqs))
        await b.drain()
        return reqs, out

    reqs, out = run(main())
    for req, rows in zip(reqs, out, strict=False):
        assert [r[1] for r in rows] == [len(s) for s in req]
        assert [r[0] for r in rows] == [int(s.sum()) for s in req]


def test_concurrent_requests_share_batches_within_the_size_cap():
    async def main():
        rec = Recorder(delay=0.02)
        b = await started(rec, max_batch_size=8, max_delay_ms=20)
        await asyncio.gather(*(b.submit(seqs(4)) for _ in range(32)))
        await b.drain()
        return rec

    rec = run(main())
    assert max(len(batch) for batch in rec.batches) == 8
    assert len(rec.batches) < 32
    assert sum(len(batch) for batch in rec.batches) == 32


def test_token_budget_caps_padded_tokens():
    async def main():
        rec = Recorder(delay=0.01)
        b = await started(rec, max_batch_size=64, max_batch_tokens=100, max_delay_ms=20)
        await asyncio.gather(*(b.submit(seqs(n)) for n in [10] * 20 + [50] * 4))
        await b.drain()
        return rec

    rec = run(main())
    for batch in rec.batches:
        assert len(batch) * max(batch) <= 100 or len(batch) == 1


def test_a_sequence_longer_than_the_budget_still_runs_alone():
    async def main():
        rec = Recorder()
        b = await started(rec, max_batch_tokens=16, max_delay_ms=0)
        rows = await b.submit(seqs(40))
        await b.drain()
        return rows

    assert run(main()) == [(sum(range(1, 41)), 40)]


def test_pick_groups_similar_lengths_around_the_oldest():
    loop = asyncio.new_event_loop()
    req = Request(seqs(30, 2, 29, 3, 31, 1, 28), loop.create_future())
    pending = [(req, i) for i in range(7)]
    chosen = pick(pending, BatchLimits(max_batch_size=4, max_batch_tokens=10_000), window=100)
    loop.close()
    assert 0 in chosen
    assert sorted(len(req.sequences[i]) for i in chosen) == [28, 29, 30, 31]


@pytest.mark.parametrize(("pause_s", "batches"), [
    # right after the one before: held for more, and the request 30 ms later joins it
    (0.0, [[1], [3, 3]]),
    # one client: longer than RECENT_ARRIVALS delays since the last arrival, nothing else is coming, so
    # waiting would be pure latency; held for 150 ms, the first would have taken the second in
    (4 * 0.150 + 0.1, [[1], [3], [3]]),
], ids=["close-together", "lone-request"])
def test_max_delay_holds_an_idle_batch_only_while_requests_come_close_together(pause_s, batches):
    async def main():
        rec = Recorder()
        b = await started(rec, max_batch_size=64, max_delay_ms=150)
        await b.submit(seqs(1))  # the first request of all: nothing came before it, it starts at once
        await asyncio.sleep(pause_s)
        first = asyncio.ensure_future(b.submit(seqs(3)))
        await asyncio.sleep(0.03)
        second = asyncio.ensure_future(b.submit(seqs(3)))
        await asyncio.gather(first, second)
        await b.drain()
        return rec

    assert run(main()).batches == batches


def test_no_delay_when_max_delay_is_zero():
    async def main():
        rec = Recorder()
        b = await started(rec, max_delay_ms=0)
        await b.submit(seqs(3))
        await b.drain()
        return rec

    assert run(main()).batches == [[3]]


def test_one_failing_request_does_not_fail_its_batch_mates():
    async def main():
        rec = Recorder(fail_on=999)
        b = await started(rec, max_batch_size=16, max_delay_ms=50)
        poisoned = [np.array([1, 999, 2], dtype=np.int64)]
        results = await asyncio.gather(b.submit(seqs(3)), b.submit(poisoned), b.submit(seqs(2, 4)),
                                       return_exceptions=True)
        await b.drain()
        return results, rec

    results, rec = run(main())
    assert isinstance(results[1], ValueError)
    assert [r[1] for r in results[0]] == [3]
    assert [r[1] for r in results[2]] == [2, 4]
    assert len(rec.batches[0]) == 4  # they did share a batch before isolation


def test_cancelled_request_is_dropped_before_it_runs():
    async def main():
        rec = Recorder(delay=0.1)
        b = await started(rec, max_batch_size=1, max_delay_ms=0, instances=1)
        running = asyncio.ensure_future(b.submit(seqs(5)))
        await asyncio.sleep(0.02)
        doomed = asyncio.ensure_future(b.submit(seqs(9)))
        await asyncio.sleep(0.01)
        doomed.cancel()
        kept = await b.submit(seqs(2))
        await running
        await b.drain()
        return rec, kept

    rec, kept = run(main())
    assert [9] not in rec.batches
    assert kept[0][1] == 2


def test_full_queue_refuses_with_retry_after():
    async def main():
        rec = Recorder(delay=0.2)
        b = await started(rec, max_batch_size=2, max_delay_ms=0, max_queue_sequences=4)
        first = asyncio.ensure_future(b.submit(seqs(1, 1)))
        await asyncio.sleep(0.05)  # running now
        queued = asyncio.ensure_future(b.submit(seqs(1, 1, 1, 1, 1, 1)))  # 2 get staged, 4 wait
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as info:
            await b.submit(seqs(1))
        await asyncio.gather(first, queued)
        await b.drain()
        return info.value

    err = run(main())
    assert err.retry_after >= 1


def test_instances_run_concurrently():
    async def main():
        rec = Recorder(delay=0.1)
        b = await started(rec, max_batch_size=1, max_delay_ms=0, instances=3)
        await asyncio.gather(*(b.submit(seqs(4)) for _ in range(6)))
        await b.drain()
        return rec

    assert run(main()).max_concurrent == 3


def test_next_batch_is_prepared_while_the_current_one_runs():
    prepared_at, executed_at = [], []

    def prepare(sequences):
        prepared_at.append(time.monotonic())
        return sequences

    def execute(prepared, instance):
        executed_at.append((time.monotonic(), time.monotonic() + 0.2))
        time.sleep(0.2)
        return [len(s) for s in prepared]

    async def main():
        b = DeviceBatcher(prepare, execute, BatchLimits(max_batch_size=2, max_delay_ms=0))
        b.start()
        first = asyncio.ensure_future(b.submit(seqs(1, 1)))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(b.submit(seqs(1, 1)))  # a full batch while the first runs
        await asyncio.gather(first, second)
        await b.drain()

    run(main())
    assert len(prepared_at) == 2
    first_start, first_end = executed_at[0]
    assert first_start < prepared_at[1] < first_end


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchLimits(max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_ms"):
        BatchLimits(max_delay_ms=-1)


def test_async_execute_runs_on_the_loop_and_declined_errors_fail_everyone():
    calls = []

    async def execute(prepared, instance):
        calls.append(len(prepared))
        if any(999 in s for s in prepared):
            raise ConnectionError("upstream down")
        return [len(s) for s in prepared]

    async def main():
        b = Coalescer(execute, BatchLimits(max_batch_size=8, max_delay_ms=30),
                      isolate=lambda exc: not isinstance(exc, ConnectionError))
        ok = await asyncio.gather(b.submit(seqs(2)), b.submit(seqs(3)))
        bad = await asyncio.gather(b.submit(seqs(2)), b.submit([np.array([999])]), return_exceptions=True)
        await b.drain()
        return ok, bad

    ok, bad = run(main())
    assert ok == [[2], [3]]
    assert all(isinstance(r, ConnectionError) for r in bad)
    assert calls == [2, 2]  # one call each time: coalesced, and the failure was not retried per request
