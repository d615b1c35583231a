"""The load-test pieces that need no server: body checks, the SLO verdict, shapes, the PNG report."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from loadtest.locust import checks, report

from loadtest import texts

ROOT = Path(__file__).resolve().parents[2]


def unit(dim: int) -> list[float]:
    return [1.0] + [0.0] * (dim - 1)


def test_checks_accept_right_bodies_and_name_what_is_wrong():
    assert checks.v1({"predictions": [unit(384)] * 2}, 2, 384) is None
    assert "expected 2 vectors" in checks.v1({"predictions": [unit(384)]}, 2, 384)
    assert "dimension 383" in checks.v1({"predictions": [unit(383)]}, 1, 384)
    assert "norm" in checks.v1({"predictions": [[2.0] + [0.0] * 383]}, 1, 384)
    assert "predictions" in checks.v1({"error": "x"}, 1, 384)
    flat = {"outputs": [{"name": "embedding", "shape": [2, 384], "datatype": "FP32", "data": unit(384) * 2}]}
    assert checks.v2(flat, 2, 384) is None
    assert "shape" in checks.v2(flat, 3, 384)
    body = {"object": "list", "data": [{"index": i, "embedding": unit(384)} for i in range(2)],
            "usage": {"prompt_tokens": 7, "total_tokens": 7}}
    assert checks.openai(body, 2, 384) is None
    assert "indices" in checks.openai({**body, "data": body["data"][::-1]}, 2, 384)


def test_mixed_texts_include_long_korean_and_emoji():
    import random

    sample = texts.mixed(random.Random(0), 400)
    assert any(t in texts.LONG for t in sample)
    assert any(t in texts.KOREAN for t in sample) and any(t in texts.EMOJI for t in sample)
    assert max(len(t) for t in texts.LONG) > 2000  # well past 256 tokens


def test_slo_verdict_and_shapes_in_a_locust_free_process(tmp_path):
    """locust patches with gevent on import: keep it out of the pytest process."""
    code = textwrap.dedent("""
        import os
        from types import SimpleNamespace as NS
        from loadtest.locust import shapes, slo

        class Total:
            def __init__(self, n, fails, p99):
                self.num_requests, self.fail_ratio, self._p99 = n, fails / max(n, 1), p99
            def get_response_time_percentile(self, q):
                return self._p99

        assert slo.verdict(Total(100, 0, 80), 100, 0) == []
        assert slo.verdict(Total(100, 0, 180), 100, None) == ["p99 180 ms > 100 ms"]
        assert slo.verdict(Total(100, 2, 80), None, 0.01) == ["failure ratio 0.0200 > 0.01"]
        assert slo.verdict(Total(0, 0, 0), 100, 0) == ["no requests were made"]

        opts = NS(num_users=40, run_time=100, spawn_rate=10)
        runner = NS(environment=NS(parsed_options=opts))
        step, spike = shapes.StepRampShape(), shapes.SpikeShape()
        step.runner = spike.runner = runner
        seen = {}
        for t in (0, 30, 55, 80, 99.9, 100):
            step.start_time = spike.start_time = __import__("time").perf_counter() - t
            seen[t] = (step.tick(), spike.tick())
        assert [seen[t][0][0] for t in (0, 30, 55, 80)] == [10, 20, 30, 40], seen
        assert seen[100] == (None, None)
        assert seen[0][1][0] == 5 and seen[55][1] == (40, 40.0) and seen[80][1][0] == 5, seen
        os.environ["SNAPSERVE_SHAPE"] = "ramp"
        try:
            shapes.selected()
            raise AssertionError("an unknown shape must be refused")
        except SystemExit as e:
            assert "step, spike" in str(e)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SNAPSERVE_STEPS": "4", "SNAPSERVE_SPIKE_RATIO": "8"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_report_plots_throughput_and_latency_against_users(tmp_path):
    history = tmp_path / "h_stats_history.csv"
    head = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
    lines = [head]
    for t, users, rps, p50, p99 in [(1, 0, 0, "N/A", "N/A"), (2, 2, 40, 20, 60), (3, 2, 44, 22, 70),
                                    (4, 8, 120, 50, 150), (5, 8, 0, 0, 0)]:
        lines.append(f"{t},{users},,Aggregated,{rps},0,{p50},0,0,0,0,0,0,{p99},0,0,0")
    history.write_text("\n".join(lines) + "\n")
    points = report.by_users(history)
    assert [(p["users"], p["rps"], p["p99_ms"]) for p in points] == [(2, 42.0, 65.0), (8, 120.0, 150.0)]
    png = report.plot(points, tmp_path / "h.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
