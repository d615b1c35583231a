"""The one admission rule: whether a queue takes a request now, and if not, how the client hears it.

Every queue in snapserve asks this before it takes work: the transformer's coalescer and the
predictor's device batcher (sequences), the transformer's chat gate and the generate engine
(requests). The order is the rule:

1. a deadline already spent is a timeout (504) whatever the queue holds: the client has gone or is
   about to, and a 429 would invite a retry that cannot succeed either;
2. a full queue is 429 + Retry-After (an empty queue takes anything, however large);
3. a caller (API key) over its own cap is 429, so one key cannot fill the queue;
4. a queue whose estimated wait is longer than ``ADMIT_SHARE`` of what is left of the deadline is
   429 now rather than a 504 later.
"""

from __future__ import annotations

import dataclasses

from snapserve.errors import ServingError

# A request is taken only while the queue's estimated wait is at most this share of what is left of its
# deadline: taken at the limit, it would be answered at its deadline, when its client may be gone (and
# the estimate is an estimate). Under overload the queue then holds about half a deadline of work.
ADMIT_SHARE = 0.5


class QueueFull(ServingError):
    """429 + Retry-After: the queue cannot take the request in time."""

    def __init__(self, reason: str, retry_after: float):
        super().__init__("overloaded", reason, retry_after=max(1.0, retry_after))


class DeadlineSpent(ServingError):
    """504: the request's deadline passed before it was taken."""

    def __init__(self, reason: str = "the request's deadline passed before it could be queued"):
        super().__init__("timeout", reason)


class Draining(ServingError):
    """503 + Retry-After: the queue is shutting down and takes no new work (retry on another replica)."""

    def __init__(self, reason: str = "server is shutting down"):
        super().__init__("unavailable", reason, retry_after=1)


@dataclasses.dataclass(frozen=True)
class Load:
    """What a queue holds when a request asks in, in its own unit (sequences or requests)."""

    waiting: int  # queued, not yet running
    limit: int  # most it may hold waiting
    tenant_waiting: int = 0  # of which the asking tenant's
    estimated_wait_s: float | None = None  # until the running, the queued and this request are done (None: idle)
    retry_after_s: float = 1.0
    unit: str = "sequences"


def admit(load: Load, count: int = 1, within_s: float | None = None, max_queued: int = 0) -> None:
    """Raise the refusal for ``count`` more units, or return when the queue takes them.

    ``within_s``: what is left of the caller's deadline (None: no deadline heard). ``max_queued``: the
    caller's own cap (0: none)."""
    if within_s is not None and within_s <= 0:
        raise DeadlineSpent()
    if load.waiting and load.waiting + count > load.limit:
        raise QueueFull(f"queue full: {load.waiting} {load.unit} waiting (limit {load.limit})", load.retry_after_s)
    mine = load.tenant_waiting
    if max_queued and mine and mine + count > max_queued:
        raise QueueFull(f"this API key has {mine} {load.unit} queued (its limit is {max_queued}); retry later",
                        load.retry_after_s)
    wait = load.estimated_wait_s
    if within_s is not None and wait is not None and wait > ADMIT_SHARE * within_s:
        raise QueueFull(f"queue's estimated wait {wait * 1000:.0f} ms is more than {ADMIT_SHARE:.0%} of what is "
                        f"left of the request's deadline ({within_s * 1000:.0f} ms)", max(load.retry_after_s, wait))
