"""locust's rerank user class, headless against a real reranker pair (tiny random cross-encoder:
plumbing, not quality), and its body check."""

from __future__ import annotations

import types

from loadtest.locust import checks
from tests import procs
from tests.integration import rerank_snapshot
from tests.loadtest.test_locust import locust, stats


def test_the_rerank_check_catches_wrong_bodies():
    good = {"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.2}]}
    assert checks.rerank(good, 2) is None
    assert "expected 3" in checks.rerank(good, 3)
    assert "sorted" in checks.rerank({"results": list(reversed(good["results"]))}, 2)
    assert "each document once" in checks.rerank({"results": [good["results"][0]] * 2}, 2)
    assert "outside" in checks.rerank({"results": [{"index": 0, "relevance_score": 3.0}]}, 1)


def test_rerank_user_class_runs_without_failures(model_dir, tmp_path):
    snap = rerank_snapshot.build(tmp_path / "snap", model_dir)
    predictor, _ = procs.start_predictor(model_dir=snap, log_dir=tmp_path)
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_dir=snap,
                                                 log_dir=tmp_path)
        try:
            prefix = tmp_path / "run"
            target = types.SimpleNamespace(transformer_url=transformer.url, model_name="snap")
            r = locust(target, tmp_path, "-u", "4", "-r", "4", "-t", "6s", "--csv", str(prefix),
                       "--slo-p99-ms", "30000", "--slo-max-failure-ratio", "0", "RerankUser",
                       env={"SNAPSERVE_TASK": "rerank"})
            assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
            rows = stats(prefix)
            assert int(rows["rerank 1x16"]["Request Count"]) > 0 and int(rows["Aggregated"]["Failure Count"]) == 0
        finally:
            transformer.stop()
    finally:
        predictor.stop()
