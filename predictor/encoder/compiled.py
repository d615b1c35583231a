"""torch.compile'd forwards, one graph per padded length bucket.

Eager torch pays a kernel launch per op, which dominates a batch of one on a GPU (3.5 ms eager vs
1.9 ms compiled at 1 x 64 tokens on an H100). Inductor specialises a graph on its input shapes, so
batches are padded up to a few lengths (powers of two up to the model's maximum) and the batch
dimension is left dynamic: a bucket costs two graphs (batch 1, batch >= 2), and warm-up compiles
every one before the pod turns ready. Padding is masked, so outputs do not change.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("snapserve.predictor")

SMALLEST = 16


def buckets(max_length: int) -> tuple[int, ...]:
    out, length = [], SMALLEST
    while length < max_length:
        out.append(length)
        length *= 2
    out.append(max(max_length, 1))
    return tuple(out)


def bucket_for(length: int, sizes: tuple[int, ...]) -> int:
    return next((b for b in sizes if b >= length), length)


def pad_to_bucket(tensors: list[torch.Tensor], sizes: tuple[int, ...], pad_id: int) -> list[torch.Tensor]:
    """[ids, mask, *types] padded on the right to the bucket's length (ids with pad_id, the rest with 0)."""
    length = tensors[0].shape[1]
    extra = bucket_for(length, sizes) - length
    if extra <= 0:
        return tensors
    return [torch.nn.functional.pad(t, (0, extra), value=pad_id if i == 0 else 0) for i, t in enumerate(tensors)]


def compile_model(model, sizes: tuple[int, ...]):
    """A callable like ``model(**inputs)`` running the compiled graph for its bucket."""
    import torch._dynamo as dynamo

    # two graphs a bucket, plus slack; past the limit dynamo would fall back to eager silently
    dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 2 * len(sizes) + 4)
    dynamo.config.accumulated_cache_size_limit = max(dynamo.config.accumulated_cache_size_limit,
                                                     2 * len(sizes) + 4)
    compiled = torch.compile(model, dynamic=False)

    def forward(**inputs):
        for t in inputs.values():
            if t.shape[0] > 1:  # batch >= 2 shares one graph per bucket; batch 1 gets its own
                dynamo.mark_dynamic(t, 0)
        return compiled(**inputs)

    log.info("torch.compile: length buckets %s (each compiled at warm-up)", list(sizes))
    return forward
