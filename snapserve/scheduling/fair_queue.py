"""The pending queue both schedulers share: sequences ordered by weighted fair queuing between tenants.

A request holds one or more sequences; the queue holds (request, index) items. Each tenant (the API
key a request came with) gets virtual finish tags 1/weight apart, from the later of its last tag and
the tag now being served (start-time fair queuing), and the queue is kept in tag order: a tenant that
floods it is served in turn with the others instead of ahead of them, and with one tenant (the
default ``""``) the order is arrival order. It counts each tenant's queued sequences (for
``admit``'s per-key cap) and drops the sequences of requests whose caller has gone.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


class Request:
    """One caller's sequences, the rows computed for them so far, and its place in the fair queue."""

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
        self.after = float("inf")  # seconds since the request before it arrived (set by the scheduler)
        self.cancelled = False
        self.tasks: set[asyncio.Task] = set()  # running async executions that carry its sequences

    def tag(self, index: int) -> float:
        return self.start + (index + 1) * self.step


def tag(item: tuple[Request, int]) -> float:
    """The fair-queuing tag of a queued (request, index) item."""
    return item[0].tag(item[1])


class FairQueue:
    """Queued (request, index) items in tag order, with each tenant's count of queued sequences."""

    def __init__(self):
        self.pending: collections.deque[tuple[Request, int]] = collections.deque()  # by fair tag
        self._served_tag = 0.0  # the virtual time: the tag of the last sequence taken into a batch
        self._last_tag: dict[str, float] = {}  # each tenant's last queued tag
        self._queued: collections.Counter[str] = collections.Counter()  # sequences queued per tenant

    def __len__(self) -> int:
        return len(self.pending)

    def __getitem__(self, index: int) -> tuple[Request, int]:
        return self.pending[index]

    def queued(self, tenant: str) -> int:
        """Sequences ``tenant`` has queued."""
        return self._queued.get(tenant, 0)

    def backlogged(self, at_least: int) -> set[str]:
        """Tenants with at least ``at_least`` sequences queued."""
        return {t for t, n in self._queued.items() if n >= at_least}

    def add(self, sequences: Sequence[np.ndarray], future: asyncio.Future, context: Any = None, tenant: str = "",
            weight: float = 1.0) -> Request:
        """Queue one request's sequences at their fair place; returns the request."""
        start = max(self._served_tag, self._last_tag.get(tenant, 0.0))
        req = Request(sequences, future, context, tenant, start, 1.0 / weight)
        self._last_tag[tenant] = req.tag(len(sequences) - 1)
        items = [(req, i) for i in range(len(req.sequences))]
        self._queued[req.tenant] += len(items)
        if not self.pending or tag(self.pending[-1]) <= req.start:
            self.pending.extend(items)  # one tenant, or the latest tags: arrival order
            return req
        at = 0
        for item in items:  # ahead of other tenants' equal tags: a newcomer is not behind a flood
            at = bisect.bisect_left(self.pending, tag(item), lo=at, key=tag)
            self.pending.insert(at, item)
            at += 1
        return req

    def head(self, count: int) -> list[tuple[Request, int]]:
        """The first ``count`` items (fewer when fewer are queued), oldest tag first."""
        return [self.pending[i] for i in range(min(count, len(self.pending)))]

    def take(self, items: list[tuple[Request, int]], within: int) -> None:
        """Remove ``items`` (oldest tag first), all among the first ``within``; the others keep their places."""
        count = min(within, len(self.pending))
        taken = {id(item) for item in items}
        rest = [self.pending[i] for i in range(count) if id(self.pending[i]) not in taken]
        for _ in range(count):
            self.pending.popleft()
        self.pending.extendleft(reversed(rest))
        self._forget(items)
        self._served_tag = max(self._served_tag, tag(items[0]))
        if len(self._last_tag) > 1024:  # tenants with nothing ahead of the virtual time start from it anyway
            self._last_tag = {t: last for t, last in self._last_tag.items() if last > self._served_tag}

    def put_back(self, items: Iterable[tuple[Request, int]]) -> None:
        """Return taken items to their places (a staged batch formed again)."""
        for item in items:
            at = bisect.bisect_left(self.pending, tag(item), key=tag)
            self.pending.insert(at, item)
            self._queued[item[0].tenant] += 1

    def drop_cancelled(self) -> int:
        """Drop the sequences of requests whose caller has gone; returns how many."""
        if not any(req.cancelled for req, _ in self.pending):
            return 0
        before = len(self.pending)
        self._forget(p for p in self.pending if p[0].cancelled)
        self.pending = collections.deque(p for p in self.pending if not p[0].cancelled)
        return before - len(self.pending)

    def _forget(self, items: Iterable[tuple[Request, int]]) -> None:
        for req, _ in items:
            self._queued[req.tenant] -= 1
            if self._queued[req.tenant] <= 0:
                del self._queued[req.tenant]
