"""The one admission rule (snapserve.scheduling.admission), in order: a spent deadline is a 504 whatever
the queue holds; then a full queue, a key over its cap and a hopeless deadline are 429 + Retry-After;
an empty queue takes anything. Both schedulers' ``admit`` ask it; the refusals are ServingErrors (status, Retry-After) as they are."""

from __future__ import annotations

import numpy as np
import pytest

from snapserve.errors import ServingError
from snapserve.scheduling.admission import Draining, ADMIT_SHARE, DeadlineSpent, Load, QueueFull, admit
from snapserve.scheduling.batch import BatchLimits
from snapserve.scheduling.coalescer import Coalescer
from snapserve.scheduling.device_batcher import DeviceBatcher

FULL = Load(waiting=10, limit=10, tenant_waiting=10, estimated_wait_s=60.0, retry_after_s=3.0)


def refusal(load: Load, count: int = 1, within_s: float | None = None, max_queued: int = 0) -> ServingError | None:
    try:
        admit(load, count, within_s, max_queued)
    except ServingError as exc:
        return exc
    return None


@pytest.mark.parametrize("within_s", [0.0, -0.5])
def test_a_spent_deadline_is_a_timeout_even_on_a_full_queue(within_s):
    err = refusal(FULL, 5, within_s=within_s, max_queued=1)
    assert isinstance(err, DeadlineSpent)
    assert (err.status, err.error_type, err.headers()) == (504, "timeout", {})


def test_a_spent_deadline_is_a_timeout_on_an_empty_queue_too():
    assert isinstance(refusal(Load(waiting=0, limit=10), within_s=0.0), DeadlineSpent)


def test_a_full_queue_is_429_with_retry_after():
    err = refusal(FULL, 1, within_s=1000.0)
    assert isinstance(err, QueueFull) and err.status == 429 and err.error_type == "overloaded"
    assert "queue full" in err.reason
    assert int(err.headers()["Retry-After"]) >= 1
    low = refusal(Load(waiting=10, limit=10, retry_after_s=0.01))
    assert int(low.headers()["Retry-After"]) >= 1  # never less than a second


def test_a_key_over_its_cap_is_429_and_other_keys_get_in():
    load = Load(waiting=5, limit=100, tenant_waiting=8)
    err = refusal(load, 3, max_queued=10)
    assert isinstance(err, QueueFull) and "this API key has 8" in err.reason
    assert int(err.headers()["Retry-After"]) >= 1
    assert refusal(load, 2, max_queued=10) is None  # up to its cap
    assert refusal(Load(waiting=5, limit=100, tenant_waiting=0), 50, max_queued=10) is None  # nothing queued yet
    assert refusal(load, 3) is None  # no cap


def test_an_estimated_wait_over_the_deadlines_share_is_429():
    load = Load(waiting=5, limit=100, estimated_wait_s=2.0)
    err = refusal(load, within_s=2.0 / ADMIT_SHARE - 1)
    assert isinstance(err, QueueFull) and "estimated wait" in err.reason
    assert int(err.headers()["Retry-After"]) >= 2  # at least the wait
    assert refusal(load, within_s=2.0 / ADMIT_SHARE + 1) is None
    assert refusal(load) is None  # no deadline heard


def test_an_empty_queue_takes_anything():
    empty = Load(waiting=0, limit=10, estimated_wait_s=None)
    assert refusal(empty, 10_000, within_s=0.001, max_queued=1) is None


def test_the_rules_apply_in_order():
    # full and over the cap and hopeless: the queue's fullness is said first
    assert "queue full" in refusal(FULL, 1, within_s=0.1, max_queued=1).reason
    # room in the queue, over the cap and hopeless: the cap
    assert "this API key" in refusal(Load(5, 100, 5, 60.0), 1, within_s=0.1, max_queued=5).reason


def fill(batcher, tenant: str, count: int) -> None:
    """Queue ``count`` sequences without running them (no event loop: nothing is scheduled)."""
    batcher._queue.add([np.ones(3, dtype=np.int64)] * count, None, tenant=tenant)


async def call(work, instance):
    return list(work)


@pytest.mark.parametrize("make", [
    lambda limits: DeviceBatcher(None, lambda work, instance: list(work), limits),
    lambda limits: Coalescer(call, limits),
], ids=["device-batcher", "coalescer"])
def test_both_schedulers_admit_by_the_one_rule(make):
    batcher = make(BatchLimits(max_batch_size=4, max_delay_ms=0, max_queue_sequences=10))
    batcher.admit(10_000, within_s=0.001)  # empty: anything
    fill(batcher, "a", 6)
    with pytest.raises(QueueFull, match="queue full"):
        batcher.admit(5)
    with pytest.raises(QueueFull, match="this API key has 6"):
        batcher.admit(1, tenant="a", max_queued=6)
    batcher.admit(1, tenant="b", max_queued=6)
    batcher._throughput.rate = 10.0  # measured: 6 queued + 1 take 0.7 s
    with pytest.raises(QueueFull, match="estimated wait"):
        batcher.admit(1, within_s=1.0)
    batcher.admit(1, within_s=2.0)
    fill(batcher, "b", 4)  # full now
    with pytest.raises(DeadlineSpent):
        batcher.admit(1, within_s=0.0)
    with pytest.raises(DeadlineSpent):
        batcher.admit(1, within_s=-1.0)  # the 504 it is


def test_draining_is_a_503_with_retry_after():
    draining = Draining()
    assert isinstance(draining, ServingError)
    assert draining.status == 503 and int(draining.headers()["Retry-After"]) >= 1
