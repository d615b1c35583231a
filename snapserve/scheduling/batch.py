"""One batch: the limits it keeps to, the sequences it holds, and how they are picked from the queue.

``pick`` packs at most ``max_batch_size`` sequences and ``max_batch_tokens`` padded tokens, grouping
similar lengths around the oldest waiting sequence (no starvation, little padding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from snapserve.scheduling.fair_queue import Request


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int = 512
    max_batch_tokens: int = 32768
    max_delay_ms: float = 1.0
    instances: int = 1
    max_queue_sequences: int = 4096
    # While more than one tenant (API key) is sending work: smaller batches, so that a forward another
    # key's request must wait for is short (0: the same limits). A batch's time is what a light tenant's
    # request waits behind a flooding one; on a CPU it grows with the batch.
    shared_batch_size: int = 0
    shared_batch_tokens: int = 0

    def __post_init__(self):
        for name in ("max_batch_size", "max_batch_tokens", "instances", "max_queue_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("shared_batch_size", "shared_batch_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {self.max_delay_ms}")


class Work(list):
    """What an executor without ``prepare`` gets: the batch's sequences, plus ``contexts``, the
    ``submit(..., context=)`` of each request in the batch (once each, oldest first)."""

    def __init__(self, sequences: list[np.ndarray], contexts: list[Any]):
        super().__init__(sequences)
        self.contexts = contexts


@dataclasses.dataclass
class Batch:
    """Sequences picked for one execution: ``items[i]`` is (request, index within it)."""

    items: list[tuple[Request, int]]
    flow: Any = None  # the strategy's name for whose batch it is (the coalescer's calls in flight per flow)
    rank: tuple[float, int] = (0.0, 0)  # its first request's place in its tenant when taken (Request.key)

    @property
    def sequences(self) -> list[np.ndarray]:
        return [req.sequences[i] for req, i in self.items]

    @property
    def padded_tokens(self) -> int:
        return len(self.items) * max(len(s) for s in self.sequences)

    def requests(self) -> list[Request]:
        return list(dict.fromkeys(req for req, _ in self.items))


def pick(pending: Sequence[tuple[Request, int]], limits: BatchLimits, window: int) -> list[int]:
    """Indices into ``pending`` (oldest first) for the next batch.

    The oldest sequence is always taken; neighbours of the closest length are added while the
    batch stays within the size cap and the padded-token budget (count x longest).
    """
    candidates = list(range(min(len(pending), window)))
    lengths = [len(pending[i][0].sequences[pending[i][1]]) for i in candidates]
    order = sorted(candidates, key=lambda i: (lengths[i], i))
    sorted_lengths = [lengths[i] for i in order]
    anchor = order.index(0)
    lo, hi = anchor, anchor + 1
    longest = sorted_lengths[anchor]
    while hi - lo < limits.max_batch_size:
        left = sorted_lengths[lo - 1] if lo > 0 else None
        right = sorted_lengths[hi] if hi < len(order) else None
        if left is None and right is None:
            break
        go_left = right is None or (left is not None and longest - left <= right - longest)
        new_longest = longest if go_left else max(longest, right)
        if (hi - lo + 1) * new_longest > limits.max_batch_tokens:
            if go_left or left is None:
                break
            # the longer neighbour does not fit; a shorter one still may
            if (hi - lo + 1) * longest > limits.max_batch_tokens:
                break
            go_left, new_longest = True, longest
        if go_left:
            lo -= 1
        else:
            hi += 1
        longest = new_longest
    return sorted(order[lo:hi])
