"""The torch engine's GPU path run on a CPU (a tiny random BERT, plumbing only): batches padded to the
warmed shapes give the rows unpadded batches give, through the real batcher, with no buffer allocated
after warm-up; and the dtype race installs a per-batch-size split and routes batches by it."""

from __future__ import annotations

import asyncio
import random

import numpy as np

from predictor.encoder import autotune, dtype_race, engine, onnx, precision
from snapserve import metadata
from snapserve.scheduling.batch import BatchLimits
from snapserve.scheduling.device_batcher import DeviceBatcher


def texts(rng: random.Random, max_length: int) -> list[np.ndarray]:
    return [np.arange(101, 101 + rng.randint(1, max_length), dtype=np.int64) for _ in range(rng.choice((1, 2, 5, 9)))]


def test_padded_shapes_through_the_batcher_match_and_allocate_nothing_after_warm_up(tiny_bert):
    info = metadata.read(tiny_bert, "auto", 0)
    eng = engine.TorchEngine(tiny_bert, info, device="cpu", dtype="float32", instances=2)
    rng = random.Random(3)
    requests = [texts(rng, info.max_length) for _ in range(40)]
    expected = [eng.execute(eng.prepare(r)) for r in requests]  # exact shapes, one request a batch
    limits = BatchLimits(max_batch_size=8, max_batch_tokens=64, max_delay_ms=2, instances=2)

    async def main():
        batcher = DeviceBatcher(eng.prepare, eng.execute, limits)
        warmed = autotune.warm_shapes(eng, batcher, "cuda", 8, 64, info.max_length)  # the GPU branch
        allocated = eng.pool.allocations
        rows = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.drain()
        return warmed, allocated, rows

    warmed, allocated, rows = asyncio.run(main())
    assert set(warmed) == set(eng.plan.reachable()) and eng.describe()["shapes"] == len(warmed)
    assert eng.pool.allocations == allocated, "a buffer was allocated after warm-up"
    for got, want in zip(rows, expected, strict=True):
        assert np.allclose(np.stack(got), want, atol=1e-5)


def test_the_dtype_race_installs_a_split_and_routes_batches_by_size(tiny_bert, monkeypatch, caplog):
    caplog.set_level("INFO", "snapserve.predictor")
    info = metadata.read(tiny_bert, "auto", 0)
    monkeypatch.setattr(dtype_race, "candidates", lambda kind: ["bfloat16"])  # as a GPU would offer
    monkeypatch.setattr(precision, "MIN_COSINE", 0.99)  # random weights: plumbing, not quality
    # the GPU table: fp32 wins small batches, bf16 large ones
    fake = {"float32": [2.5e-3, 2.6e-3, 4e-3, 9e-3], "bfloat16": [3.6e-3, 3.5e-3, 3e-3, 5e-3]}
    monkeypatch.setattr(onnx, "race", lambda engines, shapes: {name: fake[name] for name in engines})
    eng = engine.TorchEngine(tiny_bert, info, device="cpu", dtype="auto")
    cut = eng.small[0]
    assert cut == 128  # halfway (geometrically) between 4 x 16 and 8 x 32, where the winner changes
    assert eng.describe()["dtype"] == f"float32<={cut}<bfloat16" and "dtype auto on cpu" in caplog.text
    assert next(eng.small[1].parameters()).dtype == engine.torch.float32
    assert next(eng.model.parameters()).dtype == engine.torch.bfloat16
    used = []
    monkeypatch.setattr(eng, "run", lambda model, prepared, instance=0: used.append(model) or [])
    eng.execute(eng.prepare([np.arange(101, 105)]))  # 4 tokens
    eng.execute(eng.prepare([np.arange(101, 121)] * 8))  # 160 tokens: past the cut (128, between 64 and 256)
    assert used == [eng.small[1], eng.model]


def test_a_refused_candidate_leaves_fp32_alone(tiny_bert, monkeypatch):
    info = metadata.read(tiny_bert, "auto", 0)
    monkeypatch.setattr(dtype_race, "candidates", lambda kind: ["float16"])
    monkeypatch.setattr(precision, "MIN_COSINE", 1.5)
    eng = engine.TorchEngine(tiny_bert, info, device="cpu", dtype="auto")
    assert eng.describe()["dtype"] == "float32" and eng.small is None
