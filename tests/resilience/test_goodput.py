"""Goodput under overload (issue 14): open-loop load at 3x measured capacity, clients with a 1 s timeout
(they hang up then, and say so with x-request-timeout-ms). Goodput is the answers that arrived within
the deadline per second; divided by capacity it should be >= 0.8, and the rejects fast: a 429's p99 within
a fifth of the client's deadline (a quiet box measures ~1-20 ms; the bound is wide, for CI's busy one, and
still says what matters: a refusal comes while the client can still retry elsewhere). The same load against --drop_abandoned false (the old behaviour: everything accepted is
computed to the end) is run in the same test for the comparison."""

from __future__ import annotations

import asyncio
import json

from tests import procs
from tests.resilience import openloop

BATCH, OVERLOAD, SECONDS, DEADLINE_S = 8, 3.0, 12.0, 1.0


def p99(values: list[float]) -> float:
    return sorted(values)[int(0.99 * (len(values) - 1))] if values else 0.0


def run(model_dir, tmp_path, drop: str, rate: float | None = None) -> dict:
    extra = ["--drop_abandoned", drop]
    # One core for the predictor, the other for the transformer and the load generator, as pods with CPU
    # limits of their own would have it: with the predictor's threads on both cores of this box, what is
    # measured of a 429 is how long the load generator waited for a core.
    # fp32 (--cpu_bf16 false): the test is about admission by deadline, which the dtype does not change; bf16's
    # 2.7x capacity makes 3x it ~400 requests/s, which the one core left to the transformer and the load
    # generator together cannot keep up with: the transformer's own log then timed its 429s at p99 14.5 ms
    # (p50 0.5 ms) and the load generator, which shares that core, 30-38 ms (2026-12-03).
    predictor, _ = procs.start_predictor(model_dir=model_dir, log_dir=tmp_path,
                                         extra=[*extra, "--cpu_threads", "1", "--cpu_bf16", "false"])
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_dir=model_dir,
                                                 log_dir=tmp_path, extra=extra)
        try:
            url = f"{transformer.url}/v1/models/snap:predict"
            capacity = asyncio.run(openloop.closed_loop(url, 8, 5, BATCH))  # requests/s
            rate = rate or OVERLOAD * capacity
            load = openloop.start(url, rate, SECONDS, BATCH, timeout_s=DEADLINE_S)
            got = json.loads(load.communicate(timeout=SECONDS + 60)[0])
        finally:
            transformer.stop()
    finally:
        predictor.stop()
    good = sum(1 for s in got["latencies"]["200"] if s <= DEADLINE_S) / SECONDS
    return {"capacity": capacity, "rate": rate, "goodput": good, "counts": got["counts"],
            "reject_p99": p99(got["latencies"]["429"]), "reasons": got["reasons"]}


def test_goodput_at_3x_capacity_before_and_after(model_dir, tmp_path):
    after = run(model_dir, tmp_path, "true")
    before = run(model_dir, tmp_path, "false", rate=after["rate"])
    for name, got in (("--drop_abandoned true (this change)", after), ("--drop_abandoned false (before)", before)):
        print(f"\n{name}: capacity {got['capacity']:.1f} requests/s of {BATCH} sentences; offered {got['rate']:.1f}/s "
              f"for {SECONDS:.0f} s with a {DEADLINE_S:.0f} s client timeout; answers {got['counts']}; goodput "
              f"{got['goodput']:.1f}/s = {got['goodput'] / after['capacity']:.2f} of capacity; 429 p99 "
              f"{got['reject_p99'] * 1e3:.1f} ms; refusals {got['reasons']}")
    assert after["goodput"] >= 0.8 * after["capacity"], after
    assert after["reject_p99"] <= 0.2 * DEADLINE_S, after  # fresh-check measured 25.9 ms on a busy box
    assert after["goodput"] > before["goodput"], (after, before)
