"""--engine auto's split: small batches to the engine that won the small race shapes, the rest to the
other, when the winner changes once; one engine otherwise."""

from __future__ import annotations

import numpy as np

from predictor.encoder.split import SplitEngine, parse, split_point

SHAPES = ((1, 16), (4, 16), (8, 32), (32, 32))  # 16, 64, 256, 1024 tokens


def test_the_winner_changing_once_splits_halfway_between_the_two_shapes():
    # a predictor's race on the AMX box of 2026-12-03: onnx fp32 2.3x faster at one sentence, torch bf16 2.8x at 32 x 32
    times = {"torch": [0.0120, 0.0139, 0.0223, 0.0414], "onnx": [0.0053, 0.0102, 0.0286, 0.1161]}
    assert split_point(times, SHAPES) == ("onnx", "torch", 128)  # sqrt(64 * 256)
    reordered = {name: list(reversed(ts)) for name, ts in times.items()}
    assert split_point(reordered, tuple(reversed(SHAPES))) == ("onnx", "torch", 128)


def test_one_winner_throughout_or_alternating_winners_give_no_split():
    assert split_point({"torch": [1, 2, 3, 4], "onnx": [2, 3, 4, 5]}, SHAPES) is None
    assert split_point({"torch": [1, 3, 3, 5], "onnx": [2, 2, 4, 4]}, SHAPES) is None  # noise, not a crossover


class Named:
    def __init__(self, name: str):
        self.name, self.info, self.calls = name, f"info-{name}", []

    def prepare(self, sequences):
        return len(sequences)

    def execute(self, prepared, instance=0):
        self.calls.append((prepared, instance))
        return np.zeros((prepared, 2))

    def warmup(self, instance, max_length, max_batch_size):
        self.calls.append(("warmup", instance))

    def describe(self):
        return {"engine": self.name, "dtype": {"onnx": "float32", "torch": "bfloat16"}[self.name], "device": "cpu"}

    def gpu_memory(self):
        return 0, 0


def test_each_batch_goes_by_its_padded_tokens():
    small, large = Named("onnx"), Named("torch")
    split = SplitEngine(small, large, 128)
    one = [np.ones(20, dtype=np.int64)]
    assert split.execute(split.prepare(one * 6), 1).shape == (6, 2)  # 6 x 20 = 120 tokens
    assert split.execute(split.prepare(one * 7)).shape == (7, 2)  # 140
    assert small.calls == [(6, 1)] and large.calls == [(7, 0)]
    split.warmup(0, 256, 32)
    assert ("warmup", 0) in small.calls and ("warmup", 0) in large.calls
    assert split.describe() == {"engine": "onnx<=128<torch", "dtype": "float32<=128<bfloat16", "device": "cpu"}
    assert split.info == "info-torch"


def test_the_label_the_tuning_cache_keeps_parses_back():
    assert parse(SplitEngine(Named("onnx"), Named("torch"), 96).label()) == ("onnx", "torch", 96)
    assert parse("torch") is None and parse("onnx") is None and parse("a<=x<b") is None
