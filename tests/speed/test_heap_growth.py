"""The torch engine's memory on a CPU does not grow with the number of batch shapes it has seen:
every request's length differs, and before predictor/heap.py the process grew by 73% over 600 varied
batches (glibc kept the freed activations in a fragmented heap). RSS is memory, not time: asserted."""

from __future__ import annotations

import random

import numpy as np

from predictor.encoder import engine


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_varied_shapes_do_not_grow_the_heap(model_dir):
    eng = engine.load(model_dir, engine="torch", dtype="float32")
    eng.trimmer.every_s = 0.0  # every batch, so that the test's 200 batches show what hours of traffic would
    rng = random.Random(0)

    def run(steps: int) -> None:
        for _ in range(steps):
            batch, length = rng.choice([1, 2, 3, 5, 8, 13, 16, 24, 32]), rng.randint(4, 120)
            eng.execute(eng.prepare([np.arange(100, 100 + length, dtype=np.int64)] * batch))

    run(40)
    warm = rss_mib()
    run(200)
    end = rss_mib()
    print(f"\nRSS after 40 varied batches {warm:.0f} MiB, after 200 more {end:.0f} MiB ({end / warm - 1:+.1%}); "
          f"{eng.trimmer.trims} heap trims")
    assert eng.trimmer.trims > 0
    assert end <= 1.10 * warm, f"RSS grew from {warm:.0f} to {end:.0f} MiB over 200 varied batches"
