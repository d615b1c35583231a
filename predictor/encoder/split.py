"""Two engines over one snapshot, chosen batch by batch by its padded tokens (``--engine auto``).

On an AMX CPU torch in bf16 runs a batch of 32 x 32 tokens three times as fast as ONNX Runtime in fp32,
and ONNX Runtime runs one sentence twice as fast as torch: its thread pool wakes for one graph, where
torch's OpenMP team waits at a barrier per operator. When the engine race finds one engine faster on the
small shapes and the other on the large ones, small batches go to the first and the rest to the second.
Both passed their quality checks against fp32 (a float engine at start, cosine >= 0.999; the int8
ONNX graph at export, cosine >= 0.995 on the bundled texts), so a request's answer depends on its batch no
more than those bounds and batch padding already allow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class SplitEngine:
    def __init__(self, small, large, max_small_tokens: int):
        self.small, self.large, self.max_small_tokens = small, large, max_small_tokens
        self.info = large.info

    def label(self) -> str:
        """What the tuning cache keeps: ``onnx<=96<torch``."""
        return f"{self.small.describe()['engine']}<={self.max_small_tokens}<{self.large.describe()['engine']}"

    def prepare(self, sequences: list[np.ndarray]):
        tokens = len(sequences) * max((len(s) for s in sequences), default=0)
        engine = self.small if tokens <= self.max_small_tokens else self.large
        return engine, engine.prepare(sequences)

    def execute(self, prepared, instance: int = 0) -> np.ndarray:
        engine, inputs = prepared
        return engine.execute(inputs, instance)

    def warmup(self, instance: int, max_length: int, max_batch_size: int) -> None:
        self.small.warmup(instance, max_length, max_batch_size)
        self.large.warmup(instance, max_length, max_batch_size)

    def fix_shapes(self, plan, depth: int):
        """Both engines pad to ``plan`` where they can (predictor/encoder/shapes.py); the plan in force."""
        fixed = [engine.fix_shapes(plan, depth) for engine in (self.small, self.large) if hasattr(engine, "fix_shapes")]
        return fixed[-1] if fixed else plan

    def describe(self) -> dict:
        small, about = self.small.describe(), dict(self.large.describe())
        about["engine"] = self.label()
        about["dtype"] = f"{small['dtype']}<={self.max_small_tokens}<{about['dtype']}"
        return about

    def gpu_memory(self) -> tuple[int, int]:
        return self.large.gpu_memory()


def split_point(times: dict[str, list[float]], shapes: Sequence[tuple[int, int]]) -> tuple[str, str, int] | None:
    """(small engine, large engine, most tokens the small one takes) when one engine is faster on every
    shape up to some size and the other on every larger one; None when one wins throughout, or the
    winners alternate (noise: then one engine serves, by ``engine_onnx.pick``). The cut lies halfway,
    geometrically, between the two shapes where the winner changes."""
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][0] * shapes[i][1])
    winners = [min(times, key=lambda name: times[name][i]) for i in order]
    changes = [k for k in range(1, len(winners)) if winners[k] != winners[k - 1]]
    if len(changes) != 1:
        return None
    k = changes[0]
    below, above = (shapes[order[k - 1]][0] * shapes[order[k - 1]][1], shapes[order[k]][0] * shapes[order[k]][1])
    return winners[0], winners[-1], int(math.sqrt(below * above))


def parse(label: str) -> tuple[str, str, int] | None:
    """``onnx<=96<torch`` -> ("onnx", "torch", 96), as ``split_point`` gives it; None for one engine's name."""
    small, sep, rest = label.partition("<=")
    tokens, sep2, large = rest.partition("<")
    if not (sep and sep2 and tokens.isdigit() and small and large):
        return None
    return small, large, int(tokens)
