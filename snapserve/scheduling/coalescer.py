"""The transformer's coalescer: requests that arrive while predictor calls are in flight share the next call.

The predictor then sees few large requests (two-level batching), and each request keeps its rows.
A call holds one tenant's requests (the oldest tag's; the others keep their places), so the
predictor's own fair queue sees each caller as itself. Within a tenant the fair queue puts short
requests first, and a call that starts with a short one (at most ``SHORT_SHARE`` of a call) holds only
short ones: a one-sentence request does not wait for a call full of 64-sentence ones, and the
predictor's fair queue (shortest first again) runs the small call next. A flow (a tenant's short
requests, or its long ones) with no call in flight may start one beyond ``instances`` (the calls in
flight at once): it does not wait behind another flow's calls. With ``max_batch_s`` a call holds at
most that many seconds of measured throughput, since a request waits for its whole call.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from snapserve.scheduling.batch import Batch, BatchLimits, Work
from snapserve.scheduling.batcher import Batcher, Observer
from snapserve.scheduling.fair_queue import Request

# A request of at most this share of a call's size is short: its call holds only short ones (on the
# 2-core CPU a call is ~40 sequences, so single sentences, OpenAI lists of 8 and the like) ...
SHORT_SHARE = 0.25
# ... of sentences this long at most on average: a few texts past the model's window (256 tokens each for
# MiniLM) are a long call's work, not a short one's
SHORT_TEXT_TOKENS = 32


class Coalescer(Batcher):
    """``execute(work, instance) -> rows``: an ``async`` call (to the predictor) awaited on the event
    loop, with a ``Work`` (the sequences, and the ``submit(..., context=)`` of each request in it);
    ``instance`` is None for a call started beside the ``instances``."""

    def __init__(
        self,
        execute: Callable[[Work, int | None], Awaitable[Sequence[Any]]],
        limits: BatchLimits | None = None,
        observer: Observer | None = None,
        isolate: Callable[[Exception], bool] = lambda exc: True,
        on_drop: Callable[[int], None] | None = None,
        max_batch_s: float = 0.0,
    ):
        if not inspect.iscoroutinefunction(execute):
            raise TypeError("a Coalescer's execute is an async call; a DeviceBatcher runs a blocking one")
        super().__init__(limits, observer, isolate, on_drop)
        self._execute = execute
        self._max_batch_s = max_batch_s  # > 0: a call holds at most this many seconds of measured throughput
        self._planned: tuple[str, bool] = ("", True)
        self._flying: collections.Counter[tuple[str, bool]] = collections.Counter()  # calls in flight per flow

    def _hold_back(self) -> bool:
        # all instances busy: the queue grows until one frees (a call has nothing to prepare ahead: its
        # batch is formed when it can start), unless the head's flow may start one beside them
        return self._free.empty() and not (self._queue and self._beside(self._flow(self._queue[0][0])))

    def _beside(self, flow: tuple[str, bool]) -> bool:
        """Whether ``flow`` (the next call's) may start a call beyond ``instances``."""
        return self._flying[flow] == 0

    def _short(self, req: Request, limits: BatchLimits | None = None) -> bool:
        limits = limits or self._call_limits()
        count = max(1, int(limits.max_batch_size * SHORT_SHARE))
        # by its whole size: the last part of a long request is not a short one (it would ride beside them)
        return len(req.sequences) <= count and req.tokens <= count * SHORT_TEXT_TOKENS

    def _flow(self, req: Request) -> tuple[str, bool]:
        """Whose calls these are for ``instances``: the tenant's short requests, or its longer ones."""
        return req.tenant, self._short(req)

    def _plan(self, head: list[tuple[Request, int]]) -> tuple[BatchLimits, list[tuple[Request, int]]]:
        first = head[0][0]  # the oldest tag's tenant only; the others keep their places
        limits = self._call_limits()
        self._planned = first.tenant, self._short(first, limits)  # the call's flow (before its items are taken)
        head = [p for p in head if p[0].tenant == first.tenant]
        if self._short(first, limits):  # a short request's call waits for no long one
            head = [p for p in head if self._short(p[0], limits)]
        return limits, head

    def _call_limits(self) -> BatchLimits:
        """The limits, with the size cut to ``max_batch_s`` of measured throughput when that is set: a
        request waits for its whole call, so under a deadline a call must not be longer than a fraction
        of it."""
        limits, rate = self.limits, self._throughput.rate
        if not self._max_batch_s or rate is None:
            return limits
        size = max(1, min(limits.max_batch_size, int(rate * self._max_batch_s)))
        return limits if size == limits.max_batch_size else dataclasses.replace(limits, max_batch_size=size)

    async def _acquire(self, batch: Batch) -> tuple[bool, int | None]:
        batch.flow = self._planned
        if self._free.empty() and self._beside(batch.flow):
            return True, None  # a flow with nothing in flight does not wait behind others
        return await super()._acquire(batch)

    def _launched(self, batch: Batch, task: asyncio.Task) -> None:
        self._flying[batch.flow] += 1
        # a call whose callers have all gone is cancelled (Batcher.submit)
        task.snapserve_requests = batch.requests()
        for req in task.snapserve_requests:
            req.tasks.add(task)
        task.add_done_callback(lambda t: [r.tasks.discard(t) for r in t.snapserve_requests])

    def _landed(self, batch: Batch) -> None:
        self._flying[batch.flow] -= 1
        if self._flying[batch.flow] <= 0:
            del self._flying[batch.flow]

    async def _call(self, loop, prepared: Any, instance: int | None) -> Sequence[Any]:
        return await self._execute(prepared, instance)
