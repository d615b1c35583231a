"""The pending queue both schedulers share: fair between tenants (API keys), and within a tenant, between requests.

A request holds one or more sequences; the queue holds (request, index) items in two levels:

- between tenants (the API key a request came with), start-time fair queuing: each tenant's sequences
  take virtual tags 1/weight apart, from the later of its last tag and the tag now being served, and the
  queue is kept in tag order: a tenant that floods it is served in turn with the others, not ahead;
- within a tenant (without keys: everyone, the one tenant ``""``), the tenant's tags go to its requests
  shortest first: a request's place is its tokens still queued (its work: a few texts past the model's
  window cost more than many short ones) plus ``1/AGING`` of the tokens the tenant had been served when
  it arrived, ties in arrival order. A one-sentence request is next after
  any number of 64-sentence ones (they no longer set its wait), equal requests keep arrival order (each
  finishes in turn, so closed-loop clients stay staggered), and a big request is passed by at most about
  ``AGING`` times its own size of newer, smaller work, never starved.

It counts each tenant's queued sequences (for ``admit``'s per-key cap) and drops the sequences of
requests whose caller has gone.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import heapq
import itertools
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# A request that arrives after the tenant was served N more tokens ranks as if N / AGING tokens longer:
# the bound on how long newer, shorter requests may keep a long one waiting (its size x AGING).
AGING = 8.0

_arrivals = itertools.count()


class Request:
    """One caller's sequences, the rows computed for them so far, and its place in the fair queue."""

    __slots__ = ("after", "arrived", "born", "cancelled", "context", "future", "order", "queued", "queued_tokens",
                 "remaining", "rows", "sequences", "tags", "tasks", "tenant", "tokens")

    def __init__(self, sequences: Sequence[np.ndarray], future: asyncio.Future, context: Any = None,
                 tenant: str = "", start: float = 0.0, step: float = 1.0, born: int = 0):
        self.sequences = sequences
        self.tenant = tenant
        self.tags = [start + (i + 1) * step for i in range(len(sequences))]  # fair-queuing tag per sequence
        self.born = born  # tokens the tenant had been served when it arrived
        self.order = next(_arrivals)
        self.queued = len(sequences)  # sequences still in the queue
        self.tokens = sum(len(s) for s in sequences)  # all its sequences' (its size: short or long)
        self.queued_tokens = self.tokens  # its queued sequences' (its place: what is left of its work)
        self.context = context
        self.future = future
        self.rows: list[Any] = [None] * len(sequences)
        self.remaining = len(sequences)
        self.arrived = time.monotonic()
        self.after = float("inf")  # seconds since the request before it arrived (set by the scheduler)
        self.cancelled = False
        self.tasks: set[asyncio.Task] = set()  # running async executions that carry its sequences

    def tag(self, index: int) -> float:
        return self.tags[index]

    def key(self) -> tuple[float, int]:
        """Its place among its tenant's requests: fewest tokens still queued first, aged, then arrival."""
        return self.queued_tokens + self.born / AGING, self.order


def tag(item: tuple[Request, int]) -> float:
    """The fair-queuing tag of a queued (request, index) item."""
    return item[0].tags[item[1]]


def ahead(item: tuple[Request, int], anchor: tuple[Request, int], rank: tuple[float, int]) -> bool:
    """Whether the queued ``item`` (of a request with nothing in the staged batch) goes before that batch,
    whose first item was ``anchor`` and whose anchor's request ranked ``rank`` (``Request.key``) when it
    was taken: another tenant's earlier tag, or a request of the same tenant that ranks before it. (Its
    key now, after the take, would let a request the batch also took from outrank it, and back again.)"""
    if item[0].tenant != anchor[0].tenant:
        return tag(item) < tag(anchor)
    return item[0].key() < rank


class FairQueue:
    """Queued (request, index) items in tag order, with each tenant's count of queued sequences."""

    def __init__(self):
        self.pending: collections.deque[tuple[Request, int]] = collections.deque()  # by fair tag
        self._served_tag = 0.0  # the virtual time: the tag of the last sequence taken into a batch
        self._last_tag: dict[str, float] = {}  # each tenant's last queued tag
        self._queued: collections.Counter[str] = collections.Counter()  # sequences queued per tenant
        self._served: collections.Counter[str] = collections.Counter()  # tokens taken per tenant (aging clock)
        self._last_key: dict[str, tuple[float, int]] = {}  # at least the key of each tenant's last request

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
        req = Request(sequences, future, context, tenant, start, 1.0 / weight, self._served[tenant])
        self._last_tag[tenant] = req.tags[-1]
        items = [(req, i) for i in range(len(req.sequences))]
        had = self._queued[tenant]
        self._queued[tenant] += len(items)
        last = self._last_key.get(tenant)
        if had and last is not None and req.key() < last:
            self.pending.extend(items)
            self._reslot(tenant)  # shorter than a request of its tenant already queued: its tags go first
            return req
        self._last_key[tenant] = req.key()
        if not self.pending or tag(self.pending[-1]) <= req.tags[0]:
            self.pending.extend(items)  # one tenant, or the latest tags: arrival order
            return req
        at = 0
        for item in items:  # ahead of other tenants' equal tags: a newcomer is not behind a flood
            at = bisect.bisect_left(self.pending, tag(item), lo=at, key=tag)
            self.pending.insert(at, item)
            at += 1
        return req

    def _reslot(self, tenant: str) -> None:
        """Give ``tenant``'s queued tags to its queued requests again, in their order (``Request.key``)."""
        mine, others = [], []
        for item in self.pending:
            (mine if item[0].tenant == tenant else others).append(item)
        slots = sorted(tag(item) for item in mine)
        by_request: dict[Request, list[tuple[Request, int]]] = {}
        for item in mine:
            by_request.setdefault(item[0], []).append(item)
        requests = sorted(by_request, key=Request.key)
        ordered = [item for req in requests for item in sorted(by_request[req], key=lambda p: p[1])]
        for (req, i), slot in zip(ordered, slots, strict=True):
            req.tags[i] = slot
        self._last_key[tenant] = requests[-1].key() if requests else (0.0, 0)
        self.pending = collections.deque(heapq.merge(others, ordered, key=tag))

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
        for req, i in items:
            self._served[req.tenant] += len(req.sequences[i])
        self._served_tag = max(self._served_tag, tag(items[0]))
        if len(self._last_tag) > 1024:  # tenants with nothing ahead of the virtual time start from it anyway
            self._last_tag = {t: last for t, last in self._last_tag.items() if last > self._served_tag}
        if len(self._served) > 1024:  # (only a tenant's own requests are compared with its count)
            self._served = collections.Counter({t: n for t, n in self._served.items() if t in self._queued})

    def put_back(self, items: Iterable[tuple[Request, int]]) -> None:
        """Return taken items to their places (a staged batch formed again)."""
        tenants = set()
        for item in items:
            at = bisect.bisect_left(self.pending, tag(item), key=tag)
            self.pending.insert(at, item)
            self._queued[item[0].tenant] += 1
            item[0].queued += 1
            item[0].queued_tokens += len(item[0].sequences[item[1]])
            tenants.add(item[0].tenant)
        for tenant in tenants:  # a shorter request may have come meanwhile: the order within the tenant again
            self._reslot(tenant)

    def drop_cancelled(self) -> int:
        """Drop the sequences of requests whose caller has gone; returns how many."""
        if not any(req.cancelled for req, _ in self.pending):
            return 0
        before = len(self.pending)
        self._forget(p for p in self.pending if p[0].cancelled)
        self.pending = collections.deque(p for p in self.pending if not p[0].cancelled)
        return before - len(self.pending)

    def _forget(self, items: Iterable[tuple[Request, int]]) -> None:
        for req, i in items:
            req.queued -= 1
            req.queued_tokens -= len(req.sequences[i])
            self._queued[req.tenant] -= 1
            if self._queued[req.tenant] <= 0:
                del self._queued[req.tenant]
                self._last_key.pop(req.tenant, None)
