"""A fresh predictor (what a restart is) with the defaults: engine, dtype and batch limits chosen at
warm-up and logged, the limits exported as gauges, and the shapes traffic uses warmed before ready.

The first vs tenth request times are printed, a figure for the report, never asserted on."""

from __future__ import annotations

import time

import httpx
import pytest

from tests import procs

TEXT = "A man is playing a guitar on a sunny afternoon."


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tuning-cache")


@pytest.fixture(scope="module")
def fresh(model_dir, tmp_path_factory, cache_dir):
    started = time.monotonic()
    server, _ = procs.start_predictor(model_dir=model_dir, log_dir=tmp_path_factory.mktemp("warm-logs"),
                                      extra=["--device", "cpu", "--tuning_cache", str(cache_dir)])
    server.ready_s = time.monotonic() - started
    yield server
    server.stop()


def chosen_limits(log: str) -> str:
    row = next(row for row in log.splitlines() if "batch limits (" in row)
    return row[row.index("max_batch_size="):]


def test_choices_are_logged_and_the_limits_exported(fresh):
    log = fresh.log.read_text()
    for line in ("engine auto:", "batch tuning on cpu", "batch limits (measured): max_batch_size=", "fits 50 ms"):
        assert line in log, line
    metrics = httpx.get(f"{fresh.url}/metrics", timeout=10).text
    values = {limit: float(next(row.split()[-1] for row in metrics.splitlines()
                                if row.startswith(f'snapserve_batch_limit{{limit="{limit}"}}')))
              for limit in ("max_batch_size", "max_batch_tokens", "max_batch_latency_ms")}
    chosen = next(row for row in log.splitlines() if "batch limits (measured)" in row)
    assert f"max_batch_size={int(values['max_batch_size'])} " in chosen
    assert f"max_batch_tokens={int(values['max_batch_tokens'])}" in chosen
    assert values["max_batch_latency_ms"] == 50
    print("\n" + "\n".join(row for row in log.splitlines() if "engine auto" in row or "precision" in row
                           or "batch" in row or " x " in row))


@pytest.mark.parametrize("size", [1, 64])
def test_first_vs_tenth_request_after_start(fresh, size):
    url = f"{fresh.url}/v1/models/snap:predict"
    times = []
    with httpx.Client(timeout=60) as client:
        for _ in range(10):
            started = time.perf_counter()
            r = client.post(url, json={"instances": [TEXT] * size})
            times.append((time.perf_counter() - started) * 1e3)
            assert r.status_code == 200 and len(r.json()["predictions"]) == size
    print(f"\nafter a fresh start, {size} sentence(s) a request: first {times[0]:.1f} ms, tenth {times[9]:.1f} ms, "
          f"median of 2-10 {sorted(times[1:])[4]:.1f} ms (figure only: a shared, noisy 2-core box)")


def test_a_restart_reuses_what_the_first_start_measured(fresh, model_dir, tmp_path, cache_dir):
    """What a container restarted in its pod does: same flags, same machine, the pod's /tmp kept. The
    engine race and the batch tuning are not run again; the same engine and limits are served, and the
    shapes are still warmed before ready."""
    assert list(cache_dir.glob("*.json")), "the first start left no tuning cache"
    started = time.monotonic()
    again, _ = procs.start_predictor(model_dir=model_dir, log_dir=tmp_path,
                                     extra=["--device", "cpu", "--tuning_cache", str(cache_dir)])
    try:
        ready_s = time.monotonic() - started
        first, second = fresh.log.read_text(), again.log.read_text()
        assert "measured faster at an earlier start" in second and "batch limits (measured at an earlier start" in second
        assert "engine auto: torch (torch" not in second and "onnx float32: 1x16" not in second  # no race ran
        engine_of = [next(r for r in log.splitlines() if "model snap: engine=" in r).split("engine=")[1].split()[0]
                     for log in (first, second)]
        assert engine_of[0] == engine_of[1] and chosen_limits(first) == chosen_limits(second)
        assert "warm-up instance 0" in second
        r = httpx.post(f"{again.url}/v1/models/snap:predict", json={"instances": [TEXT]}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"][0]) == 384
        print(f"\nready after {fresh.ready_s:.1f} s measuring, {ready_s:.1f} s reusing the measurements "
              f"(figure only: a shared, noisy 2-core box); {chosen_limits(second)}")
    finally:
        again.stop()


def test_other_flags_are_another_fingerprint(model_dir):
    from predictor import config
    from predictor.encoder import tuning_cache

    base = config.load(["--model_dir", str(model_dir)])
    keys = {tuning_cache.fingerprint(config.load(["--model_dir", str(model_dir), *more]))
            for more in ([], ["--cpu_threads", "1"], ["--max_batch_latency_ms", "20"], ["--engine", "torch"])}
    assert len(keys) == 4 and tuning_cache.fingerprint(base) in keys
