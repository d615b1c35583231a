"""Fair shares per request, not only per key (issue 24): without keys, a one-sentence request queued
behind eight 64-sentence ones is in the next batch (or call) formed, in a short one; a big request alone
still gets full-size batches; equal requests keep arrival order; a big request is not starved by newer
small ones. Outcomes only (which batch a sequence landed in), never timings."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from snapserve.scheduling.batch import BatchLimits
from snapserve.scheduling.coalescer import Coalescer
from snapserve.scheduling.device_batcher import DeviceBatcher
from snapserve.scheduling.fair_queue import AGING, FairQueue

SINGLE = 999  # the one-sentence request's id; the big ones are 1..8


def request(whose: int, count: int, length: int = 8) -> list[np.ndarray]:
    """Sequences whose first id says which request they belong to."""
    return [np.full(length, whose, dtype=np.int64) for _ in range(count)]


class Batches:
    """Records each execution's request ids, in the order executions start."""

    def __init__(self, delay: float):
        self.delay = delay
        self.rows: list[list[int]] = []
        self.lock = threading.Lock()

    def record(self, work) -> list[int]:
        with self.lock:
            self.rows.append([int(s[0]) for s in work])
        return [int(s[0]) for s in work]

    def execute(self, work, instance):
        rows = self.record(work)
        time.sleep(self.delay)
        return rows

    async def call(self, work, instance):
        rows = self.record(work)
        await asyncio.sleep(self.delay)
        return rows

    def landed(self) -> int:
        """Index of the execution that held the single sentence."""
        return next(i for i, rows in enumerate(self.rows) if SINGLE in rows)


async def single_behind_eight_big(batcher, batches: Batches) -> tuple[int, int]:
    """Eight 64-sentence requests queued, then one sentence: (executions started before it arrived,
    the index of the one that held it)."""
    big = [asyncio.ensure_future(batcher.submit(request(k, 64))) for k in range(1, 9)]
    await asyncio.sleep(0.05)  # the first executions of the big ones are running
    before = len(batches.rows)
    assert await batcher.submit(request(SINGLE, 1)) == [SINGLE]
    await asyncio.gather(*big)
    return before, batches.landed()


def test_device_batcher_runs_a_single_sentence_next_in_a_short_batch():
    batches = Batches(delay=0.02)
    batcher = DeviceBatcher(None, batches.execute, BatchLimits(max_batch_size=16, max_delay_ms=0, shared_batch_size=4))
    before, landed = asyncio.run(single_behind_eight_big(batcher, batches))
    total = len(batches.rows)
    print(f"device batcher: {before} batches before it arrived, it rode in batch {landed} of {total}")
    # the next batch formed, or the one after (one may have been staged while the instance was busy);
    # before, it waited for all 32 batches of the big ones
    assert landed <= before + 1, batches.rows
    assert batches.rows[landed] == [SINGLE]  # a short batch of its own, not filled with the big ones
    assert sum(map(len, batches.rows)) == 8 * 64 + 1


def test_behind_many_small_calls_a_single_sentence_still_gets_a_short_batch():
    """Behind a transformer a client's 64 sentences reach the predictor as calls of a few sequences each:
    the backlog is counted over requests, and the one sentence still rides alone in a short batch."""
    batches = Batches(delay=0.02)
    batcher = DeviceBatcher(None, batches.execute, BatchLimits(max_batch_size=16, max_delay_ms=0, shared_batch_size=2))

    async def main():
        calls = [asyncio.ensure_future(batcher.submit(request(k, 8))) for k in range(1, 9)]
        await asyncio.sleep(0.03)
        before = len(batches.rows)
        await batcher.submit(request(SINGLE, 1))
        await asyncio.gather(*calls)
        return before

    before = asyncio.run(main())
    landed = batches.landed()
    assert landed <= before + 1 and batches.rows[landed] == [SINGLE], batches.rows
    assert max(map(len, batches.rows)) == 16  # the calls themselves still fill full batches


def test_the_tail_of_a_long_request_is_not_a_short_one():
    """Calls of 9 sequences in batches of 16 leave tails of 2: those are not short requests (no batches of
    2 among them); all batches but the last are full."""
    batches = Batches(delay=0.001)

    async def main():
        device = DeviceBatcher(None, batches.execute, BatchLimits(max_batch_size=16, max_delay_ms=0, shared_batch_size=2))
        await asyncio.gather(*(device.submit(request(k, 9)) for k in range(1, 11)))

    asyncio.run(main())
    sizes = [len(b) for b in batches.rows]
    assert sizes[:-1] == [16] * (len(sizes) - 1) and sum(sizes) == 90, sizes


def test_coalescer_sends_a_single_sentence_in_a_call_of_its_own_beside_the_big_ones():
    batches = Batches(delay=0.05)
    batcher = Coalescer(batches.call, BatchLimits(max_batch_size=64, max_delay_ms=0, instances=2))
    before, landed = asyncio.run(single_behind_eight_big(batcher, batches))
    print(f"coalescer: {before} calls before it arrived, it rode in call {landed} of {len(batches.rows)}")
    assert landed == before, batches.rows  # the next call started: beside the big ones' calls in flight
    assert batches.rows[landed] == [SINGLE]


def test_a_big_request_alone_still_gets_full_batches():
    batches = Batches(delay=0.001)

    async def main():
        device = DeviceBatcher(None, batches.execute, BatchLimits(max_batch_size=16, max_delay_ms=0, shared_batch_size=4))
        await device.submit(request(1, 64))
        alone = list(batches.rows)
        batches.rows.clear()
        await asyncio.gather(*(device.submit(request(k, 64)) for k in range(1, 9)))  # equal ones together
        return alone, list(batches.rows)

    alone, eight = asyncio.run(main())
    assert [len(b) for b in alone] == [16] * 4
    assert all(len(b) == 16 for b in eight), [len(b) for b in eight]

    calls = Batches(delay=0.001)

    async def coalesced():
        coalescer = Coalescer(calls.call, BatchLimits(max_batch_size=64, max_delay_ms=0, instances=2))
        await coalescer.submit(request(1, 256))

    asyncio.run(coalesced())
    assert [len(c) for c in calls.rows] == [64] * 4


def test_equal_requests_keep_arrival_order_one_after_another():
    """Shortest first is not round robin: eight equal requests finish one after another (closed-loop
    clients stay staggered), each batch holding at most two of them."""
    batches = Batches(delay=0.001)

    async def main():
        device = DeviceBatcher(None, batches.execute, BatchLimits(max_batch_size=16, max_delay_ms=0))
        await asyncio.gather(*(device.submit(request(k, 24)) for k in range(1, 9)))

    asyncio.run(main())
    order = [row for batch in batches.rows for row in batch]
    assert order == sorted(order), batches.rows
    assert all(len(set(b)) <= 2 for b in batches.rows)


def test_shorter_requests_go_first_but_a_long_one_is_not_starved():
    """In the queue itself: a newer single sentence goes before a queued 64-sentence request until the
    tenant has served about AGING x its tokens of newer work; then the long one is next."""
    queue = FairQueue()
    big = queue.add(request(1, 64), None)
    passed = 0
    while True:
        queue.add(request(SINGLE, 1), None)
        head = queue.head(1)
        if head[0][0] is big:
            break
        queue.take(head, 1)
        passed += 1
        assert passed <= AGING * 64 + 1, "the long request was starved"
    print(f"a 64-sentence request let {passed} newer single sentences go first")
    assert passed >= (64 - 1) * AGING - 1  # shortest first until then (1 + passed / AGING < 64)


def test_a_request_ranks_by_its_tokens_not_its_count_of_texts():
    """Four texts past the model's window are more work than 64 short sentences: they go after them."""
    queue = FairQueue()
    long = queue.add(request(2, 4, length=256), None)
    big = queue.add(request(1, 64, length=8), None)
    single = queue.add(request(SINGLE, 1, length=8), None)
    order = list(dict.fromkeys(p[0] for p in queue.head(len(queue))))
    assert order == [single, big, long]


def test_with_keys_the_keys_stay_the_outer_level():
    """Key a floods with long requests and sends one sentence; key b floods too. a's sentence goes before
    a's own long requests, and b still gets its share between a's batches (no key overtakes the other)."""
    queue = FairQueue()
    queue.add(request(1, 64), None, tenant="a")
    queue.add(request(2, 64), None, tenant="b")
    single = queue.add(request(SINGLE, 1), None, tenant="a")
    first = queue.head(6)
    assert [p[0].tenant for p in first] == ["b", "a"] * 3  # the keys' turns as before it came (b's tie first)
    assert first[1][0] is single  # a's first turn now goes to its one sentence


def test_two_tiers_with_long_and_single_sentence_clients_answer_everyone():
    """The transformer's coalescer calling the predictor's device batcher, one client sending 64
    sentences and four sending one each, closed loop. A staged batch that took from two requests once
    put itself back for ever (each outranked the other after the take), the event loop spinning: every
    request must be answered. (The 30 s bound is a hang detector for a ~1.5 s run, not a timing.)"""

    def execute(work, instance):
        time.sleep(0.0015 * len(work) + 0.001)  # a forward: longer with more sequences
        return [int(s[0]) for s in work]

    async def main():
        device = DeviceBatcher(None, execute, BatchLimits(max_batch_size=16, max_batch_tokens=256, max_delay_ms=1,
                                                          instances=2, shared_batch_size=1, shared_batch_tokens=16))

        async def call(work, instance):
            return await device.submit(list(work))

        coalescer = Coalescer(call, BatchLimits(max_batch_size=256, max_delay_ms=0.5, instances=4), max_batch_s=0.1)
        answered = {1: 0, SINGLE: 0}
        stop = time.monotonic() + 1.5

        async def client(whose: int, count: int):
            while time.monotonic() < stop:
                rows = await coalescer.submit([np.full(9 + k % 6, whose, dtype=np.int64) for k in range(count)])
                assert rows == [whose] * count
                answered[whose] += 1

        await asyncio.wait_for(asyncio.gather(client(1, 64), *(client(SINGLE, 1) for _ in range(4))), 30)
        return answered

    answered = asyncio.run(main())
    print(f"answered: {answered[1]} requests of 64 sentences, {answered[SINGLE]} of one")
    assert answered[1] > 0 and answered[SINGLE] > answered[1]


class Concurrency(Batches):
    """Also records how many batches holding a long request (any id but SINGLE) ran at once."""

    def __init__(self, delay: float):
        super().__init__(delay)
        self.long_now = self.most_long = 0

    def execute(self, work, instance):
        rows = self.record(work)
        long = any(r != SINGLE for r in rows)
        with self.lock:
            self.long_now += long
            self.most_long = max(self.most_long, self.long_now)
        time.sleep(self.delay)
        with self.lock:
            self.long_now -= long
        return rows


def test_while_short_requests_arrive_one_instance_is_left_to_them(monkeypatch):
    """The short lane: two instances, eight 64-sentence requests and a stream of single sentences. No two
    long batches run at once (one instance stays for the short ones), every request is answered in full;
    the window in which a short request counts as arriving is widened, so a slow box cannot close it."""
    from snapserve.scheduling import device_batcher

    monkeypatch.setattr(device_batcher, "SHORT_WINDOW_S", 60.0)
    batches = Concurrency(delay=0.01)
    batcher = DeviceBatcher(None, batches.execute, BatchLimits(max_batch_size=16, max_delay_ms=0, instances=2,
                                                               shared_batch_size=4))

    async def main():
        first = await batcher.submit(request(SINGLE, 1))  # a short request has been seen
        big = [asyncio.ensure_future(batcher.submit(request(k, 64))) for k in range(1, 9)]
        singles = []
        while not all(b.done() for b in big):
            singles.append(await batcher.submit(request(SINGLE, 1)))
        return first, [await b for b in big], singles

    first, big, singles = asyncio.run(main())
    print(f"short lane: {len(batches.rows)} batches, {len(singles)} singles served beside the long ones, "
          f"most long batches at once {batches.most_long}")
    assert batches.most_long == 1
    assert first == [SINGLE] and all(s == [SINGLE] for s in singles) and singles
    assert [len(b) for b in big] == [64] * 8 and all(set(b) == {k} for k, b in zip(range(1, 9), big, strict=True))


def test_long_requests_alone_keep_every_instance():
    """No short request arriving: the long batches run on both instances at once, as before the lane."""
    batches = Concurrency(delay=0.2)
    batcher = DeviceBatcher(None, batches.execute, BatchLimits(max_batch_size=16, max_delay_ms=0, instances=2,
                                                               shared_batch_size=4))

    async def main():
        return await asyncio.gather(*(batcher.submit(request(k, 32)) for k in (1, 2)))

    assert [len(r) for r in asyncio.run(main())] == [32, 32]
    print(f"long alone: most long batches at once {batches.most_long} of 2 instances")
    assert batches.most_long == 2
