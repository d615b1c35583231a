"""A GPU's batch shapes: a finite set, every one warmed before ready, each batch built in a reused buffer.

On a GPU a batch shape seen for the first time costs far more than its forward: cuBLAS picks kernels,
the caching allocator carves new blocks, and a pinned host buffer of a new size is a ``cudaHostAlloc``.
The GPU run of issue 24 collapsed to 27 req/s at 256 clients, mostly idle, right after start (warm-up
ran 3 shapes, every batch called ``pin_memory``). So on a GPU each batch is padded up to a size class
and a length bucket (half-octaves: at most a third more rows or tokens, which costs a launch-bound small
encoder nothing and a large batch at most that share), ``ShapePlan.reachable`` lists every shape the
batcher can form under the tuned limits, and autotune runs each once before the model reports ready.

A CPU keeps exact shapes: MKL's fp32 kernels have no per-shape set-up to warm, oneDNN's bf16 kernel
cache is bounded (precision.KERNEL_CACHE_ENTRIES) and a miss costs a few ms once, while padding would
cost its share of every forward on a device that is compute-bound at every batch size. Warming is not
what rules it out: the 41 shapes of this box's limits (16 sequences, 256 tokens, max_length 256) took
7.4 s an instance, torch fp32 on 2 shared AMD EPYC cores; a GPU's (512 x 32,768, max_length 128) are
125 shapes of a few ms each.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger("snapserve.predictor")

SMALLEST_LENGTH = 16
MAX_WARM_S = 120.0  # a bound on the start: past it the rest are warmed by traffic (logged)


def half_octaves(first: int, last: int) -> tuple[int, ...]:
    """first, 1.5 x first, 2 x first, 3 x first, 4 x first, ... up to ``last``, and ``last`` itself."""
    out, base = [], first
    while base < last:
        out.extend(v for v in (base, base * 3 // 2) if v < last)
        base *= 2
    return tuple(sorted(set(out) | {max(last, 1)}))


def round_up(value: int, classes: tuple[int, ...]) -> int:
    return next((c for c in classes if c >= value), value)


@dataclasses.dataclass(frozen=True)
class ShapePlan:
    sizes: tuple[int, ...]  # batch size classes, the largest is max_batch_size
    lengths: tuple[int, ...]  # padded length buckets, the largest is the model's max_length
    max_batch_tokens: int

    @classmethod
    def for_limits(cls, max_batch_size: int, max_batch_tokens: int, max_length: int,
                   lengths: tuple[int, ...] = ()) -> ShapePlan:
        """``lengths``: buckets the engine already pads to (torch.compile's), else half-octaves."""
        sizes = half_octaves(1, max_batch_size) if max_batch_size > 1 else (1,)
        first = min(SMALLEST_LENGTH, max(max_length, 1))
        return cls(sizes, tuple(lengths) or half_octaves(first, max(max_length, 1)), max_batch_tokens)

    def shape(self, batch: int, length: int) -> tuple[int, int]:
        """The padded (rows, tokens) a batch of ``batch`` sequences, the longest ``length``, runs as."""
        return round_up(batch, self.sizes), round_up(length, self.lengths)

    def reachable(self) -> list[tuple[int, int]]:
        """Every padded shape the batcher can form: ``batch.pick`` takes at most max_batch_size sequences
        and count x longest <= max_batch_tokens, but always one (however long). The shared limits and a
        request run alone (isolation) are smaller, so inside this set."""
        out, below = set(), 0
        for bucket in self.lengths:
            shortest = below + 1  # the shortest longest-sequence that lands in this bucket: the most rows
            most = max(1, min(self.sizes[-1], self.max_batch_tokens // shortest))
            out.update((size, bucket) for size in self.sizes if size <= round_up(most, self.sizes))
            below = bucket
        return sorted(out)


def warm(run: Callable[[int, int], object], plan: ShapePlan, max_seconds: float = MAX_WARM_S,
         clock: Callable[[], float] = time.monotonic) -> list[tuple[int, int]]:
    """``run(batch, length)`` once for each reachable shape, small first; returns the shapes run."""
    started, done = clock(), []
    shapes = sorted(plan.reachable(), key=lambda s: (s[0] * s[1], s))
    for batch, length in shapes:
        if clock() - started > max_seconds:
            log.warning("shape warm-up stopped after %.0f s at %d of %d shapes; traffic warms the rest",
                        max_seconds, len(done), len(shapes))
            break
        run(batch, length)
        done.append((batch, length))
    return done


class BufferPool:
    """Host buffers for batch inputs, by token-count class (a power of two), reused batch after batch.

    Pinned on a GPU: ``pin_memory()`` per batch is a ``cudaHostAlloc`` whenever torch's caching host
    allocator has no free block of the size (a new size class, or one still held by an in-flight copy),
    and pinning is what lets the input copy be asynchronous. A buffer is taken by ``prepare`` and
    given back when its batch's forward has finished (the copy from it is then complete) or, for a
    prepared batch that never runs, when its ``Lease`` is dropped. ``reserve`` allocates at warm-up
    what traffic will hold at once; ``allocations`` counts every allocation, so a test can check that
    none happen after it."""

    def __init__(self, alloc: Callable[[int], object]):
        self._alloc = alloc
        self._free: dict[int, list] = {}
        self._lock = threading.Lock()
        self.allocations = 0

    @staticmethod
    def size_class(elements: int) -> int:
        return 1 << max(0, elements - 1).bit_length()

    def _new(self, cls: int):
        self.allocations += 1
        return self._alloc(cls)

    def reserve(self, elements: int, depth: int) -> None:
        """At least ``depth`` free buffers for ``elements`` (e.g. one per instance + one being prepared)."""
        cls = self.size_class(elements)
        with self._lock:
            free = self._free.setdefault(cls, [])
            while len(free) < depth:
                free.append(self._new(cls))

    def take(self, elements: int) -> Lease:
        cls = self.size_class(elements)
        with self._lock:
            free = self._free.setdefault(cls, [])
            buffer = free.pop() if free else None
            if buffer is None:
                buffer = self._new(cls)
        return Lease(self, cls, buffer)

    def _give(self, cls: int, buffer) -> None:
        with self._lock:
            self._free.setdefault(cls, []).append(buffer)

    def held_bytes(self) -> int:
        with self._lock:
            return sum(cls * 8 * len(free) for cls, free in self._free.items())


class Lease:
    """One buffer out of a ``BufferPool``; ``release()`` gives it back (once; also when dropped)."""

    def __init__(self, pool: BufferPool, cls: int, buffer):
        self._pool, self._cls, self.buffer = pool, cls, buffer

    def release(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._give(self._cls, self.buffer)

    def __del__(self):
        self.release()


def pad_into(flat, sequences: list[np.ndarray], rows: int, length: int, pad_id: int,
             type_ids: np.ndarray | None) -> list:
    """[ids, mask(, types)] as ``rows x length`` int64 views of ``flat`` (a 1-d torch buffer of at least
    3 x rows x length): real tokens first, then padding; padded rows attend to one token, so no row of a
    forward is all mask (softmax over nothing), and their outputs are dropped."""
    count = 3 if type_ids is not None else 2
    views = flat[: count * rows * length].view(count, rows, length)
    ids, mask = views[0].numpy(), views[1].numpy()  # the same memory: writes go to the (pinned) buffer
    ids.fill(pad_id)
    mask.fill(0)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    mask[len(sequences):, 0] = 1
    if type_ids is not None:
        types = views[2].numpy()
        types.fill(0)
        types[: type_ids.shape[0], : type_ids.shape[1]] = type_ids
    return list(views)
