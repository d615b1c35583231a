"""``snapserve_estimated_wait_seconds`` in process: the queue's estimate (what admission computes) as the
gauge exports it, the generation engine's estimate from its progress (``predictor/generate/wait.py``), and
the generate predictor's KV usage and cache config as GIE reads them, on stand-in caches."""

from __future__ import annotations

import asyncio
import types

import numpy as np
import pytest
from prometheus_client import REGISTRY

from predictor.generate.wait import WaitEstimate
from snapserve import metrics
from snapserve.scheduling.batch import BatchLimits
from snapserve.scheduling.coalescer import Coalescer


def wait_gauge(component: str) -> float:
    return REGISTRY.get_sample_value("snapserve_estimated_wait_seconds", {"component": component})


def test_the_queues_estimated_wait_is_exported_per_scrape():
    """Running + queued sequences ÷ measured throughput; 0 before a measurement and when idle."""

    async def go():
        release = asyncio.Event()

        async def call(work, _instance=None):
            await release.wait()
            return [0] * len(work)

        coalescer = Coalescer(call, BatchLimits(max_batch_size=2, max_delay_ms=0, instances=1, max_queue_sequences=64))
        metrics.export_wait("transformer", coalescer.estimated_wait)
        unmeasured = wait_gauge("transformer")
        coalescer._throughput.started(0.0)  # a known throughput: 10 sequences in 0.5 busy seconds
        coalescer._throughput.finished(10, 0.5)
        idle = wait_gauge("transformer")
        tasks = [asyncio.create_task(coalescer.submit([np.zeros(3, np.int64)] * 2)) for _ in range(3)]
        for _ in range(20):  # the first batch (2 sequences) runs, the other 4 wait for the one instance
            await asyncio.sleep(0)
        loaded = (coalescer._running, len(coalescer._queue), wait_gauge("transformer"))
        release.set()
        await asyncio.gather(*tasks)
        return unmeasured, idle, loaded, wait_gauge("transformer")

    unmeasured, idle, (running, queued, loaded), after = asyncio.run(go())
    print(f"\nunmeasured {unmeasured}, idle {idle}, loaded {loaded} s ({running} running + {queued} queued at 20/s), "
          f"after {after}")
    assert unmeasured == 0 and idle == 0
    assert (running, queued) == (2, 4)
    assert loaded == pytest.approx(6 / 20)
    assert after == 0


def test_generations_wait_is_prompt_over_prefill_plus_decode_over_decode_rate():
    est = WaitEstimate(window_s=0.5)
    assert est.seconds() == 0  # nothing measured
    est.admitted(100, 50, now=10.0)
    est.admitted(100, 50, now=10.0)
    assert est.seconds() == 0  # work held, no rate yet: 0, not infinity
    est.progressed(100, 1, now=10.5)  # the first prompt (100 tokens) prefilled in 0.5 s, with its first token
    assert est.prefill.value == pytest.approx(200) and est.decode.value is None
    assert (est.waiting_prompt, est.remaining_decode) == (100, 99)
    assert est.seconds() == pytest.approx(100 / 200)  # decode unmeasured: no term yet
    # the next window: the second prompt and 19 decoded tokens in 1 busy second (119 tokens/s); the prefill
    # rate moves by its weight (at least its tokens' share of those seen), the decode rate gets a first value
    est.progressed(0, 1, now=10.6)
    est.progressed(100, 1, now=10.7)
    for i in range(17):
        est.progressed(0, 1, now=10.7 + 0.2 * (i + 1) / 17)
    assert est.decode.value is None  # 0.4 busy seconds: the window is still open
    est.progressed(0, 1, now=11.5)
    assert est.prefill.value == pytest.approx(0.5 * 200 + 0.5 * 119)
    assert est.decode.value == pytest.approx(119) and not est.decode.trusted  # 19 tokens: not used yet
    assert est.seconds() == 0  # no prompt waits, and the decode rate is not trusted
    prefill = est.prefill.value
    est.progressed(0, 13, now=12.0)  # 13 tokens in 0.5 s: a window of decode alone moves only its rate
    assert est.prefill.value == prefill and est.decode.value == pytest.approx(0.5 * 119 + 0.5 * 26)
    assert est.decode.trusted and (est.waiting_prompt, est.remaining_decode) == (0, 100 - 34)
    assert est.seconds() == pytest.approx(66 / 72.5)
    # both end (one finished early, one cancelled): nothing is left to wait for
    est.ended(0, 20, now=12.6)
    est.ended(0, est.remaining_decode, now=12.6)
    assert (est.held, est.waiting_prompt, est.remaining_decode, est.seconds()) == (0, 0, 0, 0)


def test_idle_time_is_not_measured_and_the_cold_warm_up_is_not_trusted():
    est = WaitEstimate()
    est.admitted(4, 2, now=0.0)
    est.progressed(4, 1, now=2.0)  # the cold warm-up request: its 4-token prompt in 2 s
    est.progressed(0, 1, now=2.1)
    est.ended(0, 0, now=2.1)
    assert est.prefill.value == pytest.approx(4 / 2) and not est.prefill.trusted
    est.admitted(1000, 10, now=100.0)  # 98 idle seconds later: not busy time
    assert est.seconds() == 0  # the cold value is not used
    est.progressed(1000, 1, now=100.5)  # 1,000 prompt tokens in 0.5 s: the window closes at once
    # (1,000 prompt tokens + the warm-up's last one in the window's 0.6 busy seconds) replaces the cold value:
    # neither ~1,000 / 98 s nor half of 2 tokens/s
    weight = 1000 / 1004
    assert est.prefill.trusted and est.prefill.value == pytest.approx((1 - weight) * 2 + weight * 1001 / 0.6)
    est.ended(0, 9, now=100.6)
    assert est.seconds() == 0


def stand_in_cache(free_sectors: int, free_blocks: int, cached: int, sectors: int = 10, blocks_per_sector: int = 4):
    """A paged cache as ``kv_usage`` reads it (transformers 5.24's PagedAttentionCache): sectors of
    ``blocks_per_sector`` whole-model blocks."""
    bytes_per_block = 100
    allocator = types.SimpleNamespace(ledger=types.SimpleNamespace(cached_blocks=dict.fromkeys(range(cached))),
                                      bytes_per_block=bytes_per_block, tokens_per_page=64)
    cache = types.SimpleNamespace(num_sectors=sectors, bytes_per_sector=bytes_per_block * blocks_per_sector,
                                  cache_allocators={"full_attention": allocator}, num_blocks=sectors * blocks_per_sector)
    cache.compute_free_capacity = lambda relative=True: (
        (free_sectors * cache.bytes_per_sector + free_blocks * bytes_per_block) / (1 if not relative else
                                                                                    sectors * cache.bytes_per_sector))
    return cache


@pytest.mark.parametrize("free_sectors, free_blocks, cached, usage", [
    (10, 0, 0, 0.0),  # empty
    (0, 0, 0, 1.0),  # full
    (5, 2, 0, 0.45),  # 22 of 40 blocks held
    (5, 2, 8, 0.25),  # 8 of the 18 used are only cached for prefix sharing: free to reuse
    (0, 0, 40, 0.0),  # after a load: every block cached, none held
])
def test_kv_usage_is_the_share_requests_hold(free_sectors, free_blocks, cached, usage):
    from predictor.generate.engine import cache_config, kv_usage

    cache = stand_in_cache(free_sectors, free_blocks, cached)
    assert kv_usage(cache) == pytest.approx(usage)
    assert cache_config(cache, 32) == ("64", "40")
