"""locust's generation user classes (streaming chat + completions), headless against a real predictor +
transformer pair on SmolLM2-135M-Instruct: 0 failures, the SLO gate, TTFT and tokens/s entries. The same users
through the local stack's nginx, with the gate's exit code 3 on a missed SLO: tests/stack/test_stack_chat.py."""

from __future__ import annotations

import types

from loadtest.locust.checks_generate import check_completion
from tests.generation.conftest import GEN_DIR, start_pair
from tests.loadtest.test_locust import locust, stats


def test_the_completion_check_catches_wrong_bodies():
    good = {"choices": [{"text": "Once", "finish_reason": "length"}], "usage": {"completion_tokens": 8}}
    assert check_completion(good, 8) is None
    assert "completion_tokens 8" in check_completion(good, 4)
    assert "no text" in check_completion({**good, "choices": [{"text": "", "finish_reason": "length"}]}, 8)
    assert check_completion({"choices": [{"text": "", "finish_reason": "stop"}], "usage": {"completion_tokens": 1}}, 8) is None
    assert "one choice" in check_completion({"choices": []}, 8)


def test_generation_user_classes_run_without_failures(tmp_path):
    assert (GEN_DIR / "model.safetensors").is_file(), "run `bash ci/setup.d/35-model-generate.sh`"
    predictor, transformer = start_pair(GEN_DIR, tmp_path)
    try:
        prefix = tmp_path / "run"
        target = types.SimpleNamespace(transformer_url=transformer.url, model_name="smol")
        # --stop-timeout: in-flight generations finish and count (a shared CPU box can take many seconds each)
        r = locust(target, tmp_path, "-u", "3", "-r", "3", "-t", "10s", "--stop-timeout", "120", "--csv", str(prefix),
                   "--slo-p99-ms", "180000", "--slo-max-failure-ratio", "0", "ChatStreamUser", "CompletionsUser",
                   env={"SNAPSERVE_TASK": "generate", "SNAPSERVE_MAX_TOKENS": "8"}, timeout=240)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        assert "SLO met" in r.stderr
        rows = stats(prefix)
        assert int(rows["Aggregated"]["Failure Count"]) == 0, rows["Aggregated"]
        by_type = {(row["Type"], row["Name"]): row for row in _rows(prefix)}
        for key in (("POST", "chat stream"), ("TTFT", "chat stream"), ("TOKENS/S", "chat stream"),
                    ("POST", "completions")):
            assert int(by_type[key]["Request Count"]) > 0, f"{key} missing: {sorted(by_type)}"
        ttft, whole = by_type[("TTFT", "chat stream")], by_type[("POST", "chat stream")]
        assert 0 < float(ttft["Median Response Time"]) <= float(whole["Max Response Time"])
        assert float(by_type[("TOKENS/S", "chat stream")]["Average Response Time"]) > 0
    finally:
        transformer.stop()
        predictor.stop()


def _rows(prefix):
    import csv
    from pathlib import Path

    with Path(f"{prefix}_stats.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))
