"""The bench's new parts without servers: batches of 64 in every run, the engine targets the engines
table adds, rounds compared within themselves, and the tables and targets printed from rows."""

from __future__ import annotations

from loadtest.bench import run as bench, report as bench_report


def row(target, sentences, conc, req_s, p50=10.0, rnd=0):
    return {"target": target, "sentences_per_request": sentences, "concurrency": conc, "round": rnd,
            "req_per_s": req_s, "sentences_per_s": req_s * sentences, "p50_ms": p50, "p95_ms": p50 * 2,
            "p99_ms": p50 * 3, "errors": 0, "requests": int(req_s * 5), "server_cpu_cores_used": 1.0,
            "machine_cpu_cores_busy": 1.0, "machine_cores": 2,
            "generator": {"cpu_cores_used": 0.2, "saturated": False, "busiest_process_core_fraction": 0.2}}


def test_every_run_sends_batches_of_64_and_the_engines_join_the_targets(model_dir):
    quick = bench.parse(["--quick", "--model_dir", str(model_dir)])
    assert 64 in quick.sentences and quick.batch_concurrency == [8]
    assert quick.targets[:3] == ["a", "b", "snapserve"] and "engine-onnx-fp32" in quick.targets
    assert bench.patterns(quick, "snapserve") == [(1, 1), (1, 32), (64, 8)]
    assert bench.patterns(quick, "engine-torch-bf16") == [(1, 1), (1, 32), (64, 8)]
    batching = bench.parse(["--compare-batching", "--model_dir", str(model_dir)])
    assert batching.sentences == [1, 64] and not batching.engines
    full = bench.parse(["--model_dir", str(model_dir), "--no-engines"])
    assert full.batch_concurrency == full.concurrency and not any(t.startswith("engine-") for t in full.targets)
    gpu = bench.parse(["--quick", "--model_dir", str(model_dir), "--device", "cuda"])
    assert "engine-torch-bf16-compiled" in gpu.targets and "engine-torch-fp16" in gpu.targets


def test_rounds_are_compared_within_themselves_and_the_issue_targets_are_judged():
    rows = [row("b", 1, 32, 60, rnd=0), row("snapserve", 1, 32, 200, rnd=0), row("b", 64, 8, 2, rnd=0),
            row("snapserve", 64, 8, 5, rnd=0), row("b", 1, 1, 50, p50=20, rnd=0), row("snapserve", 1, 1, 40, p50=21, rnd=0),
            row("b", 1, 32, 100, rnd=1), row("snapserve", 1, 32, 200, rnd=1)]
    bench_report.add_ratios(rows)
    assert rows[1]["x_b"] == 3.33 and rows[7]["x_b"] == 2.0
    goals = bench_report.targets(rows, "cpu", None)
    assert any(g.startswith("round 1: CPU: snapserve >= 3x B req/s") and g.endswith("MET") for g in goals)
    assert any(g.startswith("round 2: CPU: snapserve >= 3x B req/s") and g.endswith("MISSED") for g in goals)
    assert any("round 1: CPU: snapserve >= 2x B sentences/s at 8 clients x 64" in g and "2.50x" in g for g in goals)
    assert any("round 1: CPU: snapserve p50 <= B p50 + 2 ms" in g and g.endswith("MET") for g in goals)
    assert "rnd" in bench_report.table(rows).splitlines()[0]


def test_engines_table_shows_in_process_and_served_rows():
    inproc = {"device": "cpu", "rows": [
        {"variant": "torch float32", "cosine": 1.0, "shapes": [{"batch": 1, "tokens": 16, "sentences_per_s": 100.0,
                                                                "ms": 10.0}]},
        {"variant": "onnx int8", "cosine": 0.86, "refused": True},
        {"variant": "torch float16", "error": "no GPU"}]}
    rows = [row("b", 64, 8, 2), row("engine-onnx-fp32", 64, 8, 4)]
    bench_report.add_ratios(rows)
    text = "\n".join(bench_report.engines_table(inproc, rows))
    assert "1 x 16" in text and "100/s (10.0 ms)" in text and "refused by the quality check (cosine 0.8600" in text
    assert "unavailable: no GPU" in text and "snapserve, onnx fp32" in text and "2.00x" in text
