"""The GPU path's batch shapes, input buffers and dtype choice, on fakes (no GPU, no model): the shapes
warmed before ready are exactly the shapes the batcher can form, the buffer pool never allocates after
warm-up, and the dtype race keeps the winner of each batch size."""

from __future__ import annotations

import asyncio
import random
import threading

import numpy as np
import pytest

from predictor.encoder import autotune, dtype_race, shapes
from snapserve.scheduling.batch import BatchLimits, pick
from snapserve.scheduling.device_batcher import DeviceBatcher
from snapserve.scheduling.fair_queue import Request


class FakeGpuEngine:
    """Pads like TorchEngine with a plan; records every shape it executes."""

    def __init__(self):
        self.plan = None
        self.ran: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def describe(self):
        return {"device": "cuda"}

    def fix_shapes(self, plan, depth):
        self.plan = plan
        return plan

    def prepare(self, sequences):
        shape = self.plan.shape(len(sequences), max(len(s) for s in sequences)) if self.plan else None
        return shape, len(sequences)

    def execute(self, prepared, instance=0):
        shape, count = prepared
        with self.lock:
            self.ran.append(shape)
        return [np.zeros(2, dtype=np.float32)] * count


def formable(limits: BatchLimits, max_length: int) -> set[tuple[int, int]]:
    """(count, longest) of every batch ``batch.pick`` forms from a queue of ``count`` sequences of
    ``longest`` tokens (a uniform queue is where a batch holds the most of one length)."""
    out = set()
    for longest in range(1, max_length + 1):
        pending = [(Request([np.ones(longest, dtype=np.int64)], None), 0) for _ in range(limits.max_batch_size + 1)]
        most = len(pick(pending, limits, len(pending)))
        out.update((count, longest) for count in range(1, most + 1))
    return out


@pytest.mark.parametrize("size,tokens,max_length", [(16, 256, 128), (64, 4096, 256), (8, 64, 32), (1, 16, 64)])
def test_the_shapes_warmed_are_the_shapes_the_batcher_can_form(size, tokens, max_length):
    engine = FakeGpuEngine()
    limits = BatchLimits(max_batch_size=size, max_batch_tokens=tokens, max_delay_ms=0, instances=2)
    batcher = DeviceBatcher(engine.prepare, engine.execute, limits)
    warmed = autotune.warm_shapes(engine, batcher, "cuda", size, tokens, max_length)
    assert len(engine.ran) == 2 * len(warmed)  # every shape on each instance
    plan = engine.plan
    produced = {plan.shape(count, longest) for count, longest in formable(limits, max_length)}
    assert set(warmed) == produced
    print(f"\n{size} x {tokens} tokens, max_length {max_length}: {len(warmed)} shapes warmed")


def test_traffic_through_the_batcher_runs_only_warmed_shapes():
    engine = FakeGpuEngine()
    limits = BatchLimits(max_batch_size=16, max_batch_tokens=512, max_delay_ms=2, instances=2)
    rng = random.Random(7)

    async def main():
        batcher = DeviceBatcher(engine.prepare, engine.execute, limits)
        warmed = set(autotune.warm_shapes(engine, batcher, "cuda", 16, 512, 128))
        engine.ran.clear()
        requests = [[np.ones(rng.randint(1, 128), dtype=np.int64) for _ in range(rng.choice((1, 1, 3, 16, 40)))]
                    for _ in range(200)]
        await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.drain()
        return warmed

    warmed = asyncio.run(main())
    assert engine.ran and set(engine.ran) <= warmed


def test_a_cpu_fixes_no_shapes():
    engine = FakeGpuEngine()
    engine.describe = lambda: {"device": "cpu"}
    batcher = DeviceBatcher(engine.prepare, engine.execute, BatchLimits(max_batch_size=8, max_batch_tokens=256))
    assert autotune.warm_shapes(engine, batcher, "cpu", 8, 256, 128) == [] and engine.plan is None


def test_plan_classes_are_half_octaves_and_a_long_text_still_forms_a_batch_of_one():
    assert shapes.half_octaves(1, 16) == (1, 2, 3, 4, 6, 8, 12, 16)
    assert shapes.half_octaves(16, 100) == (16, 24, 32, 48, 64, 96, 100)
    plan = shapes.ShapePlan.for_limits(16, 64, 256)  # 64 tokens: a 200-token text runs alone
    assert plan.shape(5, 17) == (6, 24) and plan.shape(1, 200) == (1, 256)
    assert (1, 256) in plan.reachable() and (2, 256) not in plan.reachable()


def test_warming_stops_at_its_time_bound():
    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    ran = []
    done = shapes.warm(lambda b, n: ran.append((b, n)), shapes.ShapePlan.for_limits(8, 256, 64), max_seconds=3.5,
                       clock=clock)
    assert len(done) == len(ran) == 3


def test_the_pool_reuses_a_buffer_per_size_class_and_allocates_nothing_after_warm_up():
    made = []
    pool = shapes.BufferPool(lambda n: made.append(n) or np.empty(n, dtype=np.int64))
    first = pool.take(100)
    buffer = first.buffer
    first.release()
    first.release()  # once only
    again = pool.take(120)  # the same class (128 elements): the same buffer
    assert again.buffer is buffer and pool.allocations == 1 and made == [128]
    again.release()
    pool.reserve(3 * 16 * 24, depth=2)
    before = pool.allocations
    for _ in range(50):  # a prepared batch, one running: two held at once, never more
        running = pool.take(3 * 16 * 24)
        prepared = pool.take(3 * 16 * 22)  # the same class (2,048)
        running.release()
        del prepared  # dropped without running (its batch's callers left): back in the pool too
    assert pool.allocations == before


def test_padded_rows_and_tokens_are_masked_and_each_row_attends_to_something():
    import torch

    flat = torch.empty(3 * 4 * 8, dtype=torch.int64)
    ids, mask = shapes.pad_into(flat, [np.array([5, 6, 7]), np.array([9])], 4, 8, pad_id=0, type_ids=None)
    assert ids.shape == mask.shape == (4, 8)
    assert ids[0, :4].tolist() == [5, 6, 7, 0] and mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert mask[1].sum() == 1 and mask[2].sum() == 1 and mask[3].sum() == 1  # padded rows: one token each
    assert ids.data_ptr() == flat.data_ptr()  # built in the (pinned) buffer, not copied into it later


# -- the dtype race's choice, on timing tables ---------------------------------------------------
SHAPES = dtype_race.SHAPES["cuda"]  # 16, 128, 1024, 4096 padded tokens


def test_the_issue_s_gpu_fp32_for_small_batches_bf16_for_large():
    times = {"float32": [2.56e-3, 2.7e-3, 4.0e-3, 12e-3], "bfloat16": [3.65e-3, 3.7e-3, 3.5e-3, 6e-3],
             "float16": [3.6e-3, 3.8e-3, 3.4e-3, 5.5e-3]}
    small, large, cut = dtype_race.choose(times, SHAPES)
    assert (small, large) == ("float32", "float16") and 128 <= cut < 1024


def test_one_dtype_fastest_everywhere_serves_every_batch():
    times = {"float32": [3e-3, 3e-3, 5e-3, 9e-3], "bfloat16": [2e-3, 2e-3, 3e-3, 5e-3]}
    assert dtype_race.choose(times, SHAPES) == ("bfloat16", None, 0)
    assert dtype_race.choose({"float32": [1e-3] * 4}, SHAPES) == ("float32", None, 0)


def test_winners_that_alternate_are_noise_and_the_overall_fastest_wins():
    times = {"float32": [2e-3, 3e-3, 5e-3, 9e-3], "bfloat16": [2.1e-3, 2.9e-3, 5.1e-3, 8e-3]}
    assert dtype_race.choose(times, SHAPES) == ("bfloat16", None, 0)  # geometric mean: bf16 a little ahead
