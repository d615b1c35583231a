"""Dynamic batching, the part both schedulers share: many requests in, few large executions out.

Knows nothing of kserve, HTTP or torch. A request holds one or more sequences (token-id arrays of
any length); ``submit`` queues them in the fair queue (``fair_queue``: weighted fair queuing between
tenants, and within a tenant shortest request first, aged) after the one admission rule (``admission``), and the scheduler
packs sequences from all queued requests into batches of at most ``max_batch_size`` sequences and
``max_batch_tokens`` padded tokens, grouping similar lengths around the oldest waiting sequence (no
starvation, little padding). It waits up to ``max_delay_ms`` for more work only while every instance
is idle, the batch is small and requests are arriving close together (the one at the head came
within ``RECENT_ARRIVALS`` x the delay of the one before it: a lone caller's request starts at once,
since nothing else is coming). Results are split back to each request in order; a batch that fails
is retried request by request (when ``isolate`` agrees), so only the failing request sees the error.

Two strategies run this loop, one per tier: ``coalescer.Coalescer`` (the transformer: one tenant per
batch, an async call to the predictor) and ``device_batcher.DeviceBatcher`` (the predictor: prepare
and execute on instance threads). Each says when the queue is left to grow, which sequences the next
batch may hold, on what it runs and how.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from snapserve.scheduling import admission
from snapserve.scheduling.admission import Draining
from snapserve.scheduling.batch import Batch, BatchLimits, Work, pick
from snapserve.scheduling.fair_queue import FairQueue, Request, ahead

# max_delay_ms holds a batch only for a request that came within this many delays of the one before it
RECENT_ARRIVALS = 4


class Observer(Protocol):
    """Receives measurements; metrics live outside the batcher."""

    def batch(self, size: int, padded_tokens: int, real_tokens: int, seconds: float) -> None: ...
    def queue_wait(self, seconds: float) -> None: ...
    def queue_depth(self, sequences: int) -> None: ...


class NullObserver:
    def batch(self, size, padded_tokens, real_tokens, seconds):
        pass

    def queue_wait(self, seconds):
        pass

    def queue_depth(self, sequences):
        pass


class Throughput:
    """Sequences per second the executions deliver while any is running: busy time, so executions that
    overlap (calls in flight at once, several instances) count once. Behind ``estimated_wait``; the
    first execution gives a first value, then each window of ``window_s`` busy seconds moves it."""

    def __init__(self, window_s: float = 0.5):
        self.window_s = window_s
        self.rate: float | None = None
        self._running, self._since = 0, 0.0
        self._busy, self._count = 0.0, 0

    def started(self, now: float) -> None:
        if self._running == 0:
            self._since = now
        self._running += 1

    def finished(self, count: int, now: float) -> None:
        """An execution ended with ``count`` sequences done (0: it failed; its time is not counted)."""
        if count:
            self._busy += now - self._since
            self._count += count
        self._since = now
        self._running -= 1
        if count and (self.rate is None or self._busy >= self.window_s):
            rate = self._count / max(self._busy, 1e-6)
            self.rate = rate if self.rate is None else 0.5 * self.rate + 0.5 * rate
            self._busy, self._count = 0.0, 0


class Batcher:
    """Queue + scheduler + executions; a subclass is one strategy (``Coalescer``, ``DeviceBatcher``).

    An execution returns one row per sequence (``rows[i]`` belongs to ``sequences[i]``). What it gets
    without a prepare step is a ``Work`` (the sequences and their requests' contexts).
    ``isolate(exc)`` says whether a failed batch is retried request by request (default: always);
    errors it declines fail every request of the batch.
    """

    def __init__(
        self,
        limits: BatchLimits | None = None,
        observer: Observer | None = None,
        isolate: Callable[[Exception], bool] = lambda exc: True,
        on_drop: Callable[[int], None] | None = None,
    ):
        self.limits = BatchLimits() if limits is None else limits
        self._should_isolate = isolate
        self._on_drop = on_drop or (lambda count: None)  # sequences dropped because their caller left
        self._throughput = Throughput()
        self._observer = observer or NullObserver()
        self._queue = FairQueue()
        self._running = 0  # sequences in executions started and not finished
        self._last_arrival = float("-inf")
        self._wakeup: asyncio.Event | None = None
        self._free: asyncio.Queue[int] | None = None
        self._busy = 0
        self._tasks: set[asyncio.Task] = set()
        self._scheduler: asyncio.Task | None = None
        self._draining = False

    # -- the strategy ----------------------------------------------------------------------
    def _hold_back(self) -> bool:
        """Whether the scheduler leaves the queue to grow for now (instances busy)."""
        raise NotImplementedError

    def _plan(self, head: list[tuple[Request, int]]) -> tuple[BatchLimits, list[tuple[Request, int]]]:
        """The limits of the next batch and the queued items (of ``head``, oldest first) it may hold."""
        raise NotImplementedError

    async def _call(self, loop, prepared: Any, instance: int | None) -> Sequence[Any]:
        """Run one execution; its rows."""
        raise NotImplementedError

    async def _prepare_safely(self, loop, batch: Batch) -> Any:
        """What the execution gets (an exception: raised when the batch runs, so it is isolated)."""
        return Work(batch.sequences, [req.context for req in batch.requests()])

    async def _acquire(self, batch: Batch) -> tuple[bool, int | None]:
        """(whether the staged ``batch`` starts now, the instance it runs on)."""
        instance = await self._claim(batch)
        return instance is not None, instance

    def _queued(self, req: Request) -> None:
        """``req`` was queued."""

    def _launched(self, batch: Batch, task: asyncio.Task) -> None:
        """``task`` runs ``batch``."""

    def _landed(self, batch: Batch) -> None:
        """``batch``'s execution is over."""

    def _stopped(self) -> None:
        """The scheduler stopped (after ``drain``)."""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler on the running event loop (once; later calls do nothing)."""
        if self._scheduler is not None:
            return
        self._wakeup = asyncio.Event()
        self._free = asyncio.Queue()
        for instance in range(self.limits.instances):
            self._free.put_nowait(instance)
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

    async def drain(self) -> None:
        """Refuse new work, finish everything accepted, then stop."""
        self._draining = True
        while self._scheduler is not None and (self._queue or self._busy or self._tasks):
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._scheduler is None:
            return
        self._scheduler.cancel()
        self._stopped()

    # -- submission ------------------------------------------------------------------------
    async def submit(self, sequences: Sequence[np.ndarray], context: Any = None, tenant: str = "",
                     weight: float = 1.0, max_queued: int = 0) -> list[Any]:
        """Queue one request's sequences; returns their rows in order. ``context`` (e.g. the client's
        request id) reaches an execution without a prepare step in ``Work.contexts``; ``tenant`` and
        ``weight`` place it in the fair queue, ``max_queued`` caps the tenant's queued sequences."""
        if self._draining:
            raise Draining()
        if not sequences:
            return []
        self.start()
        self.admit(len(sequences), tenant=tenant, max_queued=max_queued)
        loop = asyncio.get_running_loop()
        req = self._queue.add(sequences, loop.create_future(), context, tenant, weight)
        req.after, self._last_arrival = req.arrived - self._last_arrival, req.arrived
        self._queued(req)
        self._observer.queue_depth(len(self._queue))
        self._wakeup.set()
        try:
            return await req.future
        except asyncio.CancelledError:
            # The caller is gone (its client hung up, or its deadline passed): its queued sequences are
            # dropped when met, and an async execution (a predictor call) that now serves nobody stops.
            req.cancelled = True
            for task in req.tasks:
                if all(other.cancelled for other in task.snapserve_requests):
                    task.cancel()
            raise

    def admit(self, count: int, within_s: float | None = None, tenant: str = "", max_queued: int = 0) -> None:
        """Raise the refusal (``admission``: 504 for a spent deadline, else 429) when ``count`` more
        sequences may not be queued: the check ``submit`` makes, callable first so a caller can refuse
        before costly decoding. ``within_s``: what is left of the caller's deadline; ``max_queued``:
        ``tenant``'s cap on queued sequences."""
        waiting = len(self._queue)
        load = admission.Load(
            waiting=waiting, limit=self.limits.max_queue_sequences, tenant_waiting=self._queue.queued(tenant),
            # an empty, idle queue takes anything
            estimated_wait_s=self.estimated_wait(count) if waiting or self._running else None,
            retry_after_s=self._retry_after())
        admission.admit(load, count, within_s, max_queued)

    def estimated_wait(self, count: int = 0) -> float | None:
        """Seconds until the sequences running and queued, and ``count`` more, have run (÷ measured
        throughput); None before the first batch has been measured."""
        if self._throughput.rate is None:
            return None
        return (self._running + len(self._queue) + count) / self._throughput.rate

    def _retry_after(self) -> float:
        return max(1.0, round(len(self._queue) / max(1, self.limits.max_batch_size) * 0.05, 1))

    # -- scheduling ------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        dropped = self._queue.drop_cancelled()
        if dropped:
            self._on_drop(dropped)
            self._observer.queue_depth(len(self._queue))

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while True:
                self._drop_cancelled()
                if not self._queue:
                    break
                if self._hold_back():
                    break
                await self._wait_for_fill()
                self._drop_cancelled()
                if not self._queue:
                    break
                batch = self._take()
                # prepared while the running batches execute; an instance is claimed only after
                prepared = await self._prepare_safely(loop, batch)
                start, instance = await self._acquire(batch)
                if not start:  # work that goes first arrived: the batch is formed again
                    # dropped now, not when the next forming's result replaces it: what it holds (a pooled
                    # input buffer) goes back before the next prepare takes one
                    del prepared
                    await asyncio.sleep(0)  # (the loop's other tasks run between two formings)
                    continue
                self._busy += 1
                self._running += len(batch.items)
                task = loop.create_task(self._run(batch, prepared, instance))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                self._launched(batch, task)

    async def _claim(self, batch: Batch) -> int | None:
        """An instance for the staged ``batch``, or None (its sequences back in the queue) when work that
        goes before it arrives first (another tenant's earlier tag, a shorter request of its own tenant):
        the staged batch must not hold it back."""
        anchor, inside = batch.items[0], set(batch.requests())
        while self._free.empty():
            head = self._queue[0] if self._queue else None
            if head is not None and head[0] not in inside and ahead(head, anchor, batch.rank):
                self._queue.put_back(batch.items)
                return None
            self._wakeup.clear()
            getter = asyncio.ensure_future(self._free.get())
            waker = asyncio.ensure_future(self._wakeup.wait())
            await asyncio.wait({getter, waker}, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
            if getter.done():
                return getter.result()
            getter.cancel()  # (Queue.get is cancellation-safe: a freed instance stays queued)
            self._wakeup.set()  # for the scheduler's loop, after this
        return self._free.get_nowait()

    async def _wait_for_fill(self) -> None:
        """Hold a small batch back for up to max_delay_ms, but only while every instance is idle and
        requests arrive close together: at one client (the next request comes only after this one's
        answer) the wait was pure latency, 1.4 ms of a 21 ms request through both tiers."""
        limits = self.limits
        if self._draining or limits.max_delay_ms <= 0:
            return
        if self._queue[0][0].after > RECENT_ARRIVALS * limits.max_delay_ms / 1000:
            return
        deadline = self._queue[0][0].arrived + limits.max_delay_ms / 1000
        while self._busy == 0 and len(self._queue) < limits.max_batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                return
            self._wakeup.clear()

    def _take(self) -> Batch:
        window = 4 * self.limits.max_batch_size
        limits, head = self._plan(self._queue.head(window))
        items = [head[i] for i in pick(head, limits, window)]
        rank = items[0][0].key()
        self._queue.take(items, window)
        now = time.monotonic()
        for req in dict.fromkeys(req for req, _ in items):
            self._observer.queue_wait(now - req.arrived)
        self._observer.queue_depth(len(self._queue))
        return Batch(items, rank=rank)

    async def _run(self, batch: Batch, prepared: Any, instance: int | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                if all(req.cancelled for req in batch.requests()):
                    self._on_drop(len(batch.items))
                    return  # staged before its callers went away
                if isinstance(prepared, Exception):
                    raise prepared
                rows = await self._forward(loop, batch, prepared, instance)
                self._deliver(batch, rows)
            except Exception as exc:  # noqa: BLE001 - isolate the failing request
                await self._isolate(loop, batch, exc, instance)
        finally:
            self._busy -= 1
            self._running -= len(batch.items)
            self._landed(batch)
            if instance is not None:
                self._free.put_nowait(instance)
            self._wakeup.set()

    async def _forward(self, loop, batch: Batch, prepared: Any, instance: int | None) -> Sequence[Any]:
        started = time.monotonic()
        self._throughput.started(started)
        done = 0
        try:
            rows = await self._call(loop, prepared, instance)
            sequences = batch.sequences
            if len(rows) != len(sequences):
                raise RuntimeError(f"execute returned {len(rows)} rows for {len(sequences)} sequences")
            done = len(sequences)
        finally:
            self._throughput.finished(done, time.monotonic())
        real = sum(len(s) for s in sequences)
        elapsed = time.monotonic() - started
        self._observer.batch(len(sequences), batch.padded_tokens, real, elapsed)
        return rows

    async def _isolate(self, loop, batch: Batch, exc: Exception, instance: int | None) -> None:
        requests = batch.requests()
        if len(requests) == 1 or not self._should_isolate(exc):
            for req in requests:
                self._fail(req, exc)
            return
        for req in requests:
            alone = Batch([(r, i) for r, i in batch.items if r is req])
            try:
                prepared = await self._prepare_safely(loop, alone)
                if isinstance(prepared, Exception):
                    raise prepared
                self._deliver(alone, await self._forward(loop, alone, prepared, instance))
            except Exception as own:  # noqa: BLE001
                self._fail(req, own)

    @staticmethod
    def _fail(req: Request, exc: Exception) -> None:
        if not req.future.done():
            req.future.set_exception(exc)

    @staticmethod
    def _deliver(batch: Batch, rows: Sequence[Any]) -> None:
        for (req, i), row in zip(batch.items, rows, strict=True):
            if req.future.done():
                continue
            req.rows[i] = row
            req.remaining -= 1
            if req.remaining == 0:
                req.future.set_result(req.rows)
