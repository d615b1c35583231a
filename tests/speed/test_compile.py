"""--compile on CPU (inductor): warm-up compiles every length bucket, after which traffic compiles
nothing and the outputs are eager's. A tiny random model with one bucket keeps it short."""

from __future__ import annotations

import numpy as np

from predictor.encoder import compiled, engine, precision


def test_buckets_cover_every_length_up_to_the_maximum():
    assert compiled.buckets(256) == (16, 32, 64, 128, 256)
    assert compiled.buckets(100) == (16, 32, 64, 100)
    assert compiled.buckets(8) == (8,)
    assert [compiled.bucket_for(n, (16, 32)) for n in (1, 16, 17, 32)] == [16, 16, 32, 32]


def test_compiled_forward_is_warmed_per_bucket_and_matches_eager(tiny_bert):
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    info = engine.metadata.read(tiny_bert, "auto", 0)
    assert info.max_length == 16  # one bucket: two graphs (batch 1, batch >= 2)
    eager = engine.TorchEngine(tiny_bert, info, dtype="float32")
    dynamo.reset()
    counters.clear()
    comp = engine.TorchEngine(tiny_bert, info, dtype="float32", compile=True)
    assert comp.buckets == (16,) and "compiled" in comp.describe()
    comp.warmup(0, info.max_length, 64)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 2
    batches = [[np.arange(100, 105)], [np.arange(100, 112)] * 3, [np.arange(200, 216), np.arange(7, 10)] * 9]
    for seqs in batches:
        worst = precision.cosine(eager.execute(eager.prepare(seqs)), comp.execute(comp.prepare(seqs))).min()
        assert worst >= 0.9999
    assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled after warm-up
    assert comp.prepare([np.arange(5)])[0].shape == (1, 16)  # padded to its bucket
