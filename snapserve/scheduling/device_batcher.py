"""The predictor's device batcher: batches for the model's forward pass, on the instances' own threads.

``prepare`` (padding, tensor building) and ``execute`` (the forward pass) run on worker threads,
never on the event loop; while instances are busy the queue fills on its own and a full batch is
prepared before an instance frees up. The limits are set at warm-up (``limits`` is assigned after
autotuning, before serving). While more than one tenant (API key) has sent work within
``SHARED_WINDOW_S``, batches keep to the shared limits (``BatchLimits.shared_batch_size``/``_tokens``),
and a light tenant's batch holds none of a backlogged one's sequences: the forward it waits behind
stays short. Within one tenant (or without keys) the same holds between requests: a request of at most
the shared batch size runs next (``fair_queue``: shortest first), and while longer requests have a
full batch or more queued, in a shared-size batch of such short requests; a long request alone keeps
the full batches. With more than one instance, while short requests (at most half a batch) keep arriving,
batches that hold long requests run on one instance at a time: the others are the short lane.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from snapserve.scheduling.batch import Batch, BatchLimits
from snapserve.scheduling.batcher import Batcher, Observer
from snapserve.scheduling.fair_queue import Request

SHARED_WINDOW_S = 2.0  # tenants seen within this long share the device (BatchLimits.shared_batch_size)
SHORT_WINDOW_S = 0.5  # short requests seen within this long keep an instance for themselves (the short lane)
LONG, SHORT = "long", "short"  # a running batch's flow (Batch.flow): whether it holds a long request


def instance_threads(instances: int) -> list[concurrent.futures.ThreadPoolExecutor]:
    """One thread per instance, always the same, for everything that runs the model, loading included.
    A CPU build of torch keeps an OpenMP team per calling thread, and once libgomp manages more threads
    than there are cores it stops spinning between parallel regions: measured with libgomp's default
    wait policy (the predictor sets PASSIVE, which never spins), a second team (the main thread's, from
    loading the weights there) made a 1-sentence forward 4.6 -> 10.7 ms on 2 cores."""
    return [concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"batch-exec-{i}") for i in range(instances)]


class DeviceBatcher(Batcher):
    """``prepare(sequences) -> prepared`` and ``execute(prepared, instance) -> rows`` run on threads:
    prepare on one of its own, execute on the instance's (``threads``, else one new thread each);
    without ``prepare``, ``execute`` gets a ``Work`` (the sequences and their requests' contexts)."""

    def __init__(
        self,
        prepare: Callable[[list[np.ndarray]], Any] | None,
        execute: Callable[[Any, int], Sequence[Any]],
        limits: BatchLimits | None = None,
        observer: Observer | None = None,
        isolate: Callable[[Exception], bool] = lambda exc: True,
        on_drop: Callable[[int], None] | None = None,
        threads: Sequence[concurrent.futures.ThreadPoolExecutor] | None = None,
    ):
        super().__init__(limits, observer, isolate, on_drop)
        self._prepare = prepare
        self._execute = execute
        self._seen: dict[str, float] = {}  # each tenant's last submit (monotonic), for the shared limits
        self._long_running = 0  # batches running that hold a long request (the short lane)
        self._short_seen = float("-inf")  # when a short request was last queued (monotonic)
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batch-prep")
        self._exec_pools = list(threads) if threads is not None else instance_threads(self.limits.instances)

    def on_each_instance(self, fn: Callable[[int], Any]) -> list[Any]:
        """Run ``fn(instance)`` on every instance's own thread and wait (warm-up, before serving)."""
        return [pool.submit(fn, i).result() for i, pool in enumerate(self._exec_pools)]

    def _stopped(self) -> None:
        self._prep_pool.shutdown(wait=False)
        for pool in self._exec_pools:
            pool.shutdown(wait=False)

    def _queued(self, req: Request) -> None:
        if req.tenant and self.limits.shared_batch_size:
            self._seen[req.tenant] = req.arrived
        if self._is_short(req):
            self._short_seen = req.arrived

    def _launched(self, batch: Batch, task) -> None:
        batch.flow = LONG if not all(self._is_short(req) for req in batch.requests()) else SHORT
        self._long_running += batch.flow == LONG

    def _landed(self, batch: Batch) -> None:
        self._long_running -= batch.flow == LONG

    def _hold_back(self) -> bool:
        # all instances busy: let the queue grow until one frees or a batch is full (then it is
        # prepared ahead, while the running batches execute)
        if self._free.empty() and len(self._queue) < self.limits.max_batch_size:
            return True
        # the short lane: while short requests are arriving, one long batch at a time
        return self._lane() and not self._is_short(self._queue[0][0])

    def _is_short(self, req: Request) -> bool:
        """A request the short lane serves: at most half a full batch, in sequences and in tokens."""
        limits = self.limits
        return len(req.sequences) <= max(1, limits.max_batch_size // 2) and req.tokens <= limits.max_batch_tokens // 2

    def _lane(self) -> bool:
        """Whether long work must leave the instances it is not running on to short requests: more than one
        instance, a long batch already running, and short requests queued within SHORT_WINDOW_S. Two long
        batches at once on a CPU made a short one beside them wait for a whole long batch, then run at a
        fraction of the cores (single sentences in mixed traffic: p50 ~5x their p50 alone); a long request
        alone (no short ones arriving) keeps every instance."""
        return (self.limits.instances > 1 and self._long_running > 0
                and time.monotonic() - self._short_seen < SHORT_WINDOW_S)

    def _plan(self, head: list[tuple[Request, int]]) -> tuple[BatchLimits, list[tuple[Request, int]]]:
        limits = self.limits
        if self._lane():  # (the head is short: _hold_back) the short lane's batch holds short requests only
            head = [p for p in head if self._is_short(p[0])]
        if not limits.shared_batch_size:
            return limits, head
        shared = dataclasses.replace(
            limits, max_batch_size=min(limits.max_batch_size, limits.shared_batch_size),
            max_batch_tokens=min(limits.max_batch_tokens, limits.shared_batch_tokens or limits.max_batch_tokens))
        if self._shared():
            if shared.max_batch_size < limits.max_batch_size:  # cut for several keys: a light one's batch is its own
                backlogged = self._queue.backlogged(shared.max_batch_size)
                if head[0][0].tenant not in backlogged:
                    head = [p for p in head if p[0].tenant not in backlogged]
            return shared, head
        # One key (or none): a short request at the head (the fair queue puts it before longer ones of its
        # key) runs in a short batch of short requests only, while longer requests have a full batch or
        # more queued: what it waits behind is a short forward. (Behind a transformer a client's 64
        # sentences arrive as several calls of ~0.1 s each, so the backlog is counted over requests.)
        # A request's size is its whole count: the tail of a call a full batch left behind is not short.
        short = shared.max_batch_size
        if len(head[0][0].sequences) <= short < limits.max_batch_size and sum(
                1 for p in head if len(p[0].sequences) > short) >= limits.max_batch_size:
            return shared, [p for p in head if len(p[0].sequences) <= short]
        return limits, head

    def _shared(self) -> bool:
        """Whether more than one tenant sent work within the last SHARED_WINDOW_S."""
        since = time.monotonic() - SHARED_WINDOW_S
        for tenant in [t for t, at in self._seen.items() if at < since]:
            del self._seen[tenant]
        return len(self._seen) > 1

    async def _prepare_safely(self, loop, batch: Batch) -> Any:
        if self._prepare is None:
            return await super()._prepare_safely(loop, batch)
        try:
            return await loop.run_in_executor(self._prep_pool, self._prepare, batch.sequences)
        except Exception as exc:  # noqa: BLE001 - _run isolates the failing request
            return exc

    async def _call(self, loop, prepared: Any, instance: int | None) -> Sequence[Any]:
        return await loop.run_in_executor(self._exec_pools[instance], self._execute, prepared, instance)
