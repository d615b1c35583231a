"""Batch limits tuned at warm-up: the measuring and choosing on synthetic timings, the flags, and
once on the real model through the real batcher (limits and gauges)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from predictor.encoder import autotune
from predictor import config as pconfig
from predictor.encoder.autotune import Point


def cpu_like(batch: int, length: int) -> float:
    """2 ms overhead + 40 us a token, 30% slower per token past 2,048 tokens (a CPU out of cache)."""
    tokens = batch * length
    return 0.002 + 40e-6 * tokens * (1.3 if tokens > 2048 else 1.0)


def test_measure_grows_each_length_until_the_budget_and_keeps_that_point():
    calls = []

    def timing(b, n):
        calls.append((b, n))
        return cpu_like(b, n)

    table = autotune.measure(timing, [1, 2, 4, 8, 16, 32, 64, 128], [16, 64], budget_s=0.05, repeats=3)
    by_len = {n: [p.batch for p in table if p.length == n] for n in (16, 64)}
    # 16 tokens: 64 x 16 = 1024 tokens = 43 ms fits, 128 x 16 = 2048 tokens = 84 ms is the first over
    assert by_len[16] == [1, 2, 4, 8, 16, 32, 64, 128]
    assert by_len[64] == [1, 2, 4, 8, 16, 32]  # 32 x 64 = 2048 tokens, 84 ms: over, so 64 is not tried
    assert all(calls.count((p.batch, p.length)) == 4 for p in table)  # one untimed + three timed


def test_choose_takes_the_fastest_batch_within_the_budget_and_the_widest_token_budget():
    table = autotune.measure(cpu_like, [1, 2, 4, 8, 16, 32, 64, 128], [16, 64, 256], budget_s=0.05)
    choice = autotune.choose(table, 50.0)
    assert choice.max_batch_size == 64  # most sequences/s at 16 tokens within 50 ms
    assert choice.max_batch_tokens == 1024  # 64 x 16, 16 x 64, 4 x 256: the same cost each
    text = "\n".join(choice.lines())
    assert "128 x 16" in text and "no" in text and "yes" in text


def test_a_throughput_peak_below_the_budget_wins_over_a_bigger_batch():
    # past 32 sequences the forward gets slower per sequence (the CPU: 512 slower than 32-64)
    def peaked(b, n):
        return 0.002 + 0.001 * b * (1.0 if b <= 32 else 1.6)

    table = autotune.measure(peaked, [1, 8, 32, 64, 128], [16], budget_s=1.0)
    assert autotune.choose(table, 1000.0).max_batch_size == 32


def test_long_texts_costing_more_a_token_do_not_hold_short_ones_back():
    # attention: a token of a 256-token text costs 4x one of a 16-token text
    table = autotune.measure(lambda b, n: 0.002 + 40e-6 * b * n * (4 if n == 256 else 1), [1, 2, 4, 8, 16, 32, 64],
                             [16, 256], budget_s=0.05)
    choice = autotune.choose(table, 50.0)
    assert (choice.max_batch_size, choice.max_batch_tokens) == (64, 1024)


def test_a_budget_nothing_fits_leaves_batches_of_one_and_explicit_limits_win():
    table = [Point(1, 16, 0.2), Point(1, 64, 0.3)]
    choice = autotune.choose(table, 50.0)
    assert (choice.max_batch_size, choice.max_batch_tokens) == (1, 64)  # one sequence of any length
    table = autotune.measure(cpu_like, [1, 2, 4, 8, 16, 32, 64], [16, 64], budget_s=0.05)
    choice = autotune.choose(table, 50.0, max_batch_size=8)
    assert choice.max_batch_size == 8 and choice.max_batch_tokens == 1024
    assert autotune.choose(table, 50.0, max_batch_tokens=999).max_batch_tokens == 999


def test_measuring_stops_after_its_time_limit():
    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    table = autotune.measure(lambda b, n: 0.001, [1, 2, 4, 8], [16, 64], budget_s=1.0, max_seconds=3.5, clock=clock)
    assert 0 < len(table) < 8


def test_grid_and_budget_follow_the_device():
    batches, lengths = autotune.grid("cpu", 256, None)
    assert max(batches) == 256 and lengths == [16, 64, 256]
    batches, lengths = autotune.grid("cuda:0", 128, 100)
    assert max(batches) == 100 and 100 in batches and lengths == [16, 64, 128]
    assert autotune.budget_ms("auto", "cpu") == 50 and autotune.budget_ms("auto", "cuda:0") == 20
    assert autotune.budget_ms(7.5, "cpu") == 7.5


def test_flags_take_auto_or_numbers_and_env_vars(monkeypatch):
    s = pconfig.load([])
    assert (s.max_batch_size, s.max_batch_tokens, s.max_batch_latency_ms) == ("auto", "auto", "auto")
    assert s.batch_limits().max_batch_size >= 1  # an auto limit parses before it is tuned
    s = pconfig.load(["--max_batch_size", "64", "--max_batch_tokens", "AUTO", "--max_batch_latency_ms", "30"])
    assert (s.max_batch_size, s.max_batch_tokens, s.max_batch_latency_ms) == (64, "auto", 30.0)
    monkeypatch.setenv("MAX_BATCH_TOKENS", "4096")
    monkeypatch.setenv("MAX_BATCH_SIZE", "auto")
    s = pconfig.load([])
    assert (s.max_batch_size, s.max_batch_tokens) == ("auto", 4096)


@pytest.mark.parametrize("argv", [["--max_batch_size", "0"], ["--max_batch_tokens", "-1"],
                                  ["--max_batch_latency_ms", "0"]])
def test_impossible_limits_are_refused_at_parse_time(argv):
    with pytest.raises(ValueError, match="--max_batch"):
        pconfig.load(argv)


def test_a_limit_that_is_neither_auto_nor_a_number_is_an_argparse_error():
    with pytest.raises(SystemExit):
        pconfig.load(["--max_batch_size", "lots"])


def gauge(limit: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("snapserve_batch_limit", {"limit": limit})


def test_tuning_the_real_model_through_the_real_batcher(model_dir, caplog):
    """Once on the real model: the table is measured on the instance's own thread, logged, and the
    limits it picks are what the batcher then serves with, and what the gauges say."""
    from predictor.encoder import engine
    from snapserve.scheduling.device_batcher import DeviceBatcher

    eng = engine.load(model_dir, engine="torch", dtype="float32")
    s = pconfig.load(["--max_batch_latency_ms", "40", "--instances", "1"])
    batcher = DeviceBatcher(eng.prepare, eng.execute, s.batch_limits())
    caplog.set_level("INFO", "snapserve.predictor")
    limits = autotune.tune(eng, batcher, s, eng.info.max_length)
    assert 1 <= limits.max_batch_size <= 256 and limits.max_batch_tokens >= 16
    assert limits.max_queue_sequences == s.max_queue_sequences and limits.instances == 1
    assert "batch tuning on cpu" in caplog.text and "batch limits (measured)" in caplog.text
    print("\n" + "\n".join(r.getMessage() for r in caplog.records if "batch" in r.getMessage()))
    assert gauge("max_batch_size") == limits.max_batch_size
    assert gauge("max_batch_tokens") == limits.max_batch_tokens and gauge("max_batch_latency_ms") == 40

    batcher.limits = limits

    async def serve():
        rows = await batcher.submit([np.full(12, 100, dtype=np.int64)] * 70)
        await batcher.drain()
        return rows

    assert len(asyncio.run(serve())) == 70


def test_explicit_limits_win_and_no_warmup_uses_the_device_fallback(model_dir):
    from predictor.encoder import engine
    from snapserve.scheduling.device_batcher import DeviceBatcher

    eng = engine.load(model_dir, engine="torch", dtype="float32")
    s = pconfig.load(["--max_batch_size", "8", "--max_batch_tokens", "333", "--warmup", "false", "--instances", "1"])
    limits = autotune.tune(eng, DeviceBatcher(eng.prepare, eng.execute, s.batch_limits()), s, eng.info.max_length)
    assert (limits.max_batch_size, limits.max_batch_tokens) == (8, 333)
    assert gauge("max_batch_size") == 8
    s = pconfig.load(["--warmup", "false", "--instances", "1"])
    limits = autotune.tune(eng, DeviceBatcher(eng.prepare, eng.execute, s.batch_limits()), s, eng.info.max_length)
    assert (limits.max_batch_size, limits.max_batch_tokens) == autotune.FALLBACK["cpu"]
