"""Dynamic batching: many requests in, few large forward passes out.

Knows nothing of kserve, HTTP or torch. A request holds one or more sequences (token-id arrays of
any length); the scheduler packs sequences from all queued requests into batches of at most
``max_batch_size`` sequences and ``max_batch_tokens`` padded tokens, grouping similar lengths
around the oldest waiting sequence (no starvation, little padding). It waits up to
``max_delay_ms`` for more work only while every instance is idle, the batch is small and requests
are arriving close together (the one at the head came within ``RECENT_ARRIVALS`` x the delay of the
one before it: a lone caller's request starts at once, since nothing else is coming); while
instances are busy the queue fills on its own and a full batch is prepared before an instance
frees up. ``prepare`` (padding, tensor building) and ``execute`` (the forward pass) run on
worker threads, never on the event loop; results are split back to each request in order. A
batch that fails is retried request by request, so only the failing request sees the error.

Tenants (``submit(..., tenant=, weight=)``; the API key a request came with): queued sequences are
ordered by weighted fair queuing (start-time fair queuing: each tenant's sequences get virtual
finish tags 1/weight apart, from the later of its last tag and the tag now being served), so a tenant
that floods the queue is served in turn with the others instead of ahead of them. ``admit`` caps
each tenant's queued sequences. With one tenant (the default ``""``) the order is arrival order.
With ``group_by_tenant`` (the transformer's coalescer) a batch holds one tenant's requests, and a
tenant with no execution in flight may start one beyond ``instances``: its call to the predictor
does not wait behind another tenant's, and the predictor's own fair queue then serves it in turn.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import concurrent.futures
import dataclasses
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np


# A request is taken only while the queue's estimated wait is at most this share of what is left of its
# deadline: taken at the limit, it would be answered at its deadline, when its client may be gone (and
# the estimate is an estimate). Under overload the queue then holds about half a deadline of work.
ADMIT_SHARE = 0.5
# max_delay_ms holds a batch only for a request that came within this many delays of the one before it
RECENT_ARRIVALS = 4


class QueueFull(Exception):
    """The queue cannot take the request in time; the caller should answer 429 with ``retry_after``."""

    def __init__(self, waiting: int, limit: int, retry_after: float, reason: str = ""):
        super().__init__(reason or f"queue full: {waiting} sequences waiting (limit {limit})")
        self.retry_after = retry_after


class Draining(Exception):
    """The batcher is shutting down and takes no new work."""


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


SHARED_WINDOW_S = 2.0  # tenants seen within this long share the device (BatchLimits.shared_batch_size)


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


class Work(list):
    """What an executor without ``prepare`` gets: the batch's sequences, plus ``contexts``, the
    ``submit(..., context=)`` of each request in the batch (once each, oldest first)."""

    def __init__(self, sequences: list[np.ndarray], contexts: list[Any]):
        super().__init__(sequences)
        self.contexts = contexts


class _Request:
    __slots__ = ("after", "arrived", "cancelled", "context", "future", "remaining", "rows", "sequences", "start", "step",
                 "tasks", "tenant")

    def __init__(self, sequences: Sequence[np.ndarray], future: asyncio.Future, context: Any = None,
                 tenant: str = "", start: float = 0.0, step: float = 1.0):
        self.sequences = sequences
        self.tenant, self.start, self.step = tenant, start, step  # fair-queuing tags: start + (i + 1) * step
        self.context = context
        self.future = future
        self.rows: list[Any] = [None] * len(sequences)
        self.remaining = len(sequences)
        self.arrived = time.monotonic()
        self.after = float("inf")  # seconds since the request before it arrived (set by submit)
        self.cancelled = False
        self.tasks: set[asyncio.Task] = set()  # running async executions that carry its sequences

    def tag(self, index: int) -> float:
        return self.start + (index + 1) * self.step


def _tag(item: tuple[_Request, int]) -> float:
    return item[0].tag(item[1])


@dataclasses.dataclass
class Batch:
    """Sequences picked for one forward pass: ``items[i]`` is (request, index within it)."""

    items: list[tuple[_Request, int]]

    @property
    def sequences(self) -> list[np.ndarray]:
        return [req.sequences[i] for req, i in self.items]

    @property
    def padded_tokens(self) -> int:
        return len(self.items) * max(len(s) for s in self.sequences)

    def requests(self) -> list[_Request]:
        return list(dict.fromkeys(req for req, _ in self.items))


def pick(pending: Sequence[tuple[_Request, int]], limits: BatchLimits, window: int) -> list[int]:
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


def instance_threads(instances: int) -> list[concurrent.futures.ThreadPoolExecutor]:
    """One thread per instance, always the same, for everything that runs the model, loading included.
    A CPU build of torch keeps an OpenMP team per calling thread, and once libgomp manages more threads
    than there are cores it stops spinning between parallel regions: measured with libgomp's default
    wait policy (the predictor sets PASSIVE, which never spins), a second team (the main thread's, from
    loading the weights there) made a 1-sentence forward 4.6 -> 10.7 ms on 2 cores."""
    return [concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"batch-exec-{i}") for i in range(instances)]


class Batcher:
    """Queue + scheduler + N concurrent executors over ``prepare`` and ``execute``.

    ``prepare(sequences) -> prepared`` and ``execute(prepared, instance) -> rows`` run on threads;
    ``execute`` returns one row per sequence (``rows[i]`` belongs to ``sequences[i]``); without
    ``prepare`` it gets a ``Work`` (the sequences and their requests' contexts). An
    ``async`` execute (a network call: the transformer coalescing requests for the predictor) is
    awaited on the event loop instead. ``isolate(exc)`` says whether a failed batch is retried
    request by request (default: always); errors it declines fail every request of the batch.
    """

    def __init__(
        self,
        prepare: Callable[[list[np.ndarray]], Any] | None,
        execute: Callable[[Any, int], Sequence[Any]],
        limits: BatchLimits = BatchLimits(),
        observer: Observer | None = None,
        isolate: Callable[[Exception], bool] = lambda exc: True,
        on_drop: Callable[[int], None] | None = None,
        group_by_tenant: bool = False,
        max_batch_s: float = 0.0,
        threads: Sequence[concurrent.futures.ThreadPoolExecutor] | None = None,
    ):
        self.limits = limits
        self._prepare = prepare
        self._execute = execute
        self._async_execute = inspect.iscoroutinefunction(execute)
        self._should_isolate = isolate
        self._on_drop = on_drop or (lambda count: None)  # sequences dropped because their caller left
        self._throughput = Throughput()
        self._observer = observer or NullObserver()
        self._pending: collections.deque[tuple[_Request, int]] = collections.deque()  # by fair tag
        self._group_by_tenant = group_by_tenant
        self._max_batch_s = max_batch_s  # > 0: a batch holds at most this many seconds of measured throughput
        self._served_tag = 0.0  # the virtual time: the tag of the last sequence taken into a batch
        self._last_tag: dict[str, float] = {}  # each tenant's last queued tag
        self._queued: collections.Counter[str] = collections.Counter()  # sequences queued per tenant
        self._flying: collections.Counter[str] = collections.Counter()  # executions in flight per tenant
        self._running = 0  # sequences in executions started and not finished
        self._seen: dict[str, float] = {}  # each tenant's last submit (monotonic), for the shared limits
        self._last_arrival = float("-inf")
        self._wakeup: asyncio.Event | None = None
        self._free: asyncio.Queue[int] | None = None
        self._busy = 0
        self._tasks: set[asyncio.Task] = set()
        self._scheduler: asyncio.Task | None = None
        self._draining = False
        self._prep_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batch-prep")
        self._exec_pools = list(threads) if threads is not None else instance_threads(limits.instances)

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
        while self._scheduler is not None and (self._pending or self._busy or self._tasks):
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._scheduler is None:
            return
        self._scheduler.cancel()
        self._prep_pool.shutdown(wait=False)
        for pool in self._exec_pools:
            pool.shutdown(wait=False)

    def on_each_instance(self, fn: Callable[[int], Any]) -> list[Any]:
        """Run ``fn(instance)`` on every instance's own thread and wait (warm-up, before serving)."""
        return [pool.submit(fn, i).result() for i, pool in enumerate(self._exec_pools)]

    # -- submission ------------------------------------------------------------------------
    async def submit(self, sequences: Sequence[np.ndarray], context: Any = None, tenant: str = "",
                     weight: float = 1.0, max_queued: int = 0) -> list[Any]:
        """Queue one request's sequences; returns their rows in order. ``context`` (e.g. the client's
        request id) reaches an executor without ``prepare`` in ``Work.contexts``; ``tenant`` and
        ``weight`` place it in the fair queue, ``max_queued`` caps the tenant's queued sequences."""
        if self._draining:
            raise Draining("shutting down")
        if not sequences:
            return []
        self.start()
        self.admit(len(sequences), tenant=tenant, max_queued=max_queued)
        loop = asyncio.get_running_loop()
        if tenant and self.limits.shared_batch_size:
            self._seen[tenant] = time.monotonic()
        start = max(self._served_tag, self._last_tag.get(tenant, 0.0))
        req = _Request(sequences, loop.create_future(), context, tenant, start, 1.0 / weight)
        req.after, self._last_arrival = req.arrived - self._last_arrival, req.arrived
        self._last_tag[tenant] = req.tag(len(sequences) - 1)
        self._enqueue(req)
        self._observer.queue_depth(len(self._pending))
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

    def _enqueue(self, req: _Request) -> None:
        items = [(req, i) for i in range(len(req.sequences))]
        self._queued[req.tenant] += len(items)
        if not self._pending or _tag(self._pending[-1]) <= req.start:
            self._pending.extend(items)  # one tenant, or the latest tags: arrival order
            return
        at = 0
        for item in items:  # ahead of other tenants' equal tags: a newcomer is not behind a flood
            at = bisect.bisect_left(self._pending, _tag(item), lo=at, key=_tag)
            self._pending.insert(at, item)
            at += 1

    def _forget(self, items) -> None:
        for req, _ in items:
            self._queued[req.tenant] -= 1
            if self._queued[req.tenant] <= 0:
                del self._queued[req.tenant]

    def admit(self, count: int, within_s: float | None = None, tenant: str = "", max_queued: int = 0) -> None:
        """Raise QueueFull when ``count`` more sequences would not fit: the check ``submit`` makes,
        callable first so a caller can refuse before costly decoding. An empty queue takes anything.
        With ``within_s`` (what is left of the caller's deadline), also when the queue's estimated
        wait is longer than that: a fast 429 now rather than a 504 later. With ``max_queued``, also
        when ``tenant`` would have more than that many sequences queued."""
        waiting = len(self._pending)
        if waiting and waiting + count > self.limits.max_queue_sequences:
            raise QueueFull(waiting, self.limits.max_queue_sequences, self._retry_after())
        mine = self._queued.get(tenant, 0)
        if max_queued and mine and mine + count > max_queued:
            raise QueueFull(mine, max_queued, self._retry_after(),
                            f"this API key has {mine} sequences queued (its limit is {max_queued}); retry later")
        wait = self.estimated_wait(count) if waiting or self._running else None  # an empty queue takes anything
        if within_s is not None and within_s > 0 and wait is not None and wait > ADMIT_SHARE * within_s:
            raise QueueFull(waiting, self.limits.max_queue_sequences, max(1.0, wait),
                            f"queue's estimated wait {wait * 1000:.0f} ms is more than {ADMIT_SHARE:.0%} of "
                            f"what is left of the request's deadline ({within_s * 1000:.0f} ms)")  # (expired: 504)

    def estimated_wait(self, count: int = 0) -> float | None:
        """Seconds until the sequences running and queued, and ``count`` more, have run (÷ measured
        throughput); None before the first batch has been measured."""
        if self._throughput.rate is None:
            return None
        return (self._running + len(self._pending) + count) / self._throughput.rate

    def _retry_after(self) -> float:
        return max(1.0, round(len(self._pending) / max(1, self.limits.max_batch_size) * 0.05, 1))

    # -- scheduling ------------------------------------------------------------------------
    def _drop_cancelled(self) -> None:
        if any(req.cancelled for req, _ in self._pending):
            before = len(self._pending)
            self._forget(p for p in self._pending if p[0].cancelled)
            self._pending = collections.deque(p for p in self._pending if not p[0].cancelled)
            self._on_drop(before - len(self._pending))
            self._observer.queue_depth(len(self._pending))

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while True:
                self._drop_cancelled()
                if not self._pending:
                    break
                if self._free.empty() and not self._beside() and (
                        self._async_execute or len(self._pending) < self.limits.max_batch_size):
                    # all instances busy: let the queue grow until one frees or a batch is full (a
                    # network call has nothing to prepare ahead: its batch is formed when it can start)
                    break
                await self._wait_for_fill()
                self._drop_cancelled()
                if not self._pending:
                    break
                batch = self._take()
                # prepared while the running batches execute; an instance is claimed only after
                prepared = await self._prepare_safely(loop, batch)
                tenant = batch.items[0][0].tenant
                if self._free.empty() and self._beside(tenant):
                    instance = None  # a tenant with nothing in flight does not wait behind others
                else:
                    instance = await self._claim(batch)
                    if instance is None:
                        continue  # another tenant's earlier work arrived: the batch is formed again
                self._busy += 1
                self._flying[tenant] += 1
                self._running += len(batch.items)
                task = loop.create_task(self._run(batch, prepared, instance, tenant))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                if self._async_execute:
                    task.snapserve_requests = batch.requests()
                    for req in task.snapserve_requests:
                        req.tasks.add(task)
                    task.add_done_callback(lambda t: [r.tasks.discard(t) for r in t.snapserve_requests])

    async def _claim(self, batch: Batch) -> int | None:
        """An instance for the staged ``batch``, or None (its sequences back in the queue) when another
        tenant's work with an earlier tag arrives first: the staged batch must not hold it back."""
        anchor = batch.items[0]
        while self._free.empty():
            head = self._pending[0] if self._pending else None
            if head is not None and head[0].tenant != anchor[0].tenant and _tag(head) < _tag(anchor):
                for item in batch.items:
                    at = bisect.bisect_left(self._pending, _tag(item), key=_tag)
                    self._pending.insert(at, item)
                    self._queued[item[0].tenant] += 1
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

    def _beside(self, tenant: str | None = None) -> bool:
        """Whether ``tenant`` (the next batch's) may start an async execution beyond ``instances``."""
        if not (self._group_by_tenant and self._async_execute and self._pending):
            return False
        tenant = self._pending[0][0].tenant if tenant is None else tenant
        return self._flying[tenant] == 0

    async def _prepare_safely(self, loop, batch: Batch) -> Any:
        if self._prepare is None:
            return Work(batch.sequences, [req.context for req in batch.requests()])
        try:
            return await loop.run_in_executor(self._prep_pool, self._prepare, batch.sequences)
        except Exception as exc:  # noqa: BLE001 - _run isolates the failing request
            return exc

    async def _wait_for_fill(self) -> None:
        """Hold a small batch back for up to max_delay_ms, but only while every instance is idle and
        requests arrive close together: at one client (the next request comes only after this one's
        answer) the wait was pure latency, 1.4 ms of a 21 ms request through both tiers."""
        limits = self.limits
        if self._draining or limits.max_delay_ms <= 0:
            return
        if self._pending[0][0].after > RECENT_ARRIVALS * limits.max_delay_ms / 1000:
            return
        deadline = self._pending[0][0].arrived + limits.max_delay_ms / 1000
        while self._busy == 0 and len(self._pending) < limits.max_batch_size:
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
        count = min(window, len(self._pending))
        head = [self._pending[i] for i in range(count)]
        shared = bool(self.limits.shared_batch_size) and self._shared()
        limits = self._batch_limits(shared)
        if self._group_by_tenant:  # the oldest tag's tenant only; the others keep their places
            tenant = head[0][0].tenant
            head = [p for p in head if p[0].tenant == tenant]
        elif shared and limits.max_batch_size < self.limits.max_batch_size:  # cut for several keys: a light one's batch is its own
            backlogged = {t for t, n in self._queued.items() if n >= limits.max_batch_size}
            if head[0][0].tenant not in backlogged:
                head = [p for p in head if p[0].tenant not in backlogged]
        chosen = pick(head, limits, window)
        items = [head[i] for i in chosen]
        taken = {id(item) for item in items}
        rest = [self._pending[i] for i in range(count) if id(self._pending[i]) not in taken]
        for _ in range(count):
            self._pending.popleft()
        self._pending.extendleft(reversed(rest))
        self._forget(items)
        self._served_tag = max(self._served_tag, _tag(items[0]))
        if len(self._last_tag) > 1024:  # tenants with nothing ahead of the virtual time start from it anyway
            self._last_tag = {t: tag for t, tag in self._last_tag.items() if tag > self._served_tag}
        now = time.monotonic()
        for req in dict.fromkeys(req for req, _ in items):
            self._observer.queue_wait(now - req.arrived)
        self._observer.queue_depth(len(self._pending))
        return Batch(items)

    def _batch_limits(self, shared: bool = False) -> BatchLimits:
        """The limits (the shared ones when ``shared``), with the size cut to ``max_batch_s`` of measured throughput when that is set: a
        request waits for its whole batch (the transformer: its whole predictor call), so under a
        deadline a batch must not be longer than a fraction of it."""
        limits = self.limits
        if shared:
            limits = dataclasses.replace(
                limits, max_batch_size=min(limits.max_batch_size, limits.shared_batch_size),
                max_batch_tokens=min(limits.max_batch_tokens, limits.shared_batch_tokens or limits.max_batch_tokens))
        rate = self._throughput.rate
        if not self._max_batch_s or rate is None:
            return limits
        size = max(1, min(limits.max_batch_size, int(rate * self._max_batch_s)))
        return limits if size == limits.max_batch_size else dataclasses.replace(limits, max_batch_size=size)

    def _shared(self) -> bool:
        """Whether more than one tenant sent work within the last SHARED_WINDOW_S."""
        since = time.monotonic() - SHARED_WINDOW_S
        for tenant in [t for t, at in self._seen.items() if at < since]:
            del self._seen[tenant]
        return len(self._seen) > 1

    async def _run(self, batch: Batch, prepared: Any, instance: int | None, tenant: str = "") -> None:
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
            self._flying[tenant] -= 1
            if self._flying[tenant] <= 0:
                del self._flying[tenant]
            if instance is not None:
                self._free.put_nowait(instance)
            self._wakeup.set()

    async def _forward(self, loop, batch: Batch, prepared: Any, instance: int) -> Sequence[Any]:
        started = time.monotonic()
        self._throughput.started(started)
        done = 0
        try:
            if self._async_execute:
                rows = await self._execute(prepared, instance)
            else:
                rows = await loop.run_in_executor(self._exec_pools[instance], self._execute, prepared, instance)
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

    async def _isolate(self, loop, batch: Batch, exc: Exception, instance: int) -> None:
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
    def _fail(req: _Request, exc: Exception) -> None:
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
