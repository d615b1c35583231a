"""loadtest/bench/device_check.sh's CPU dry run: the same steps as on a GPU machine (the cold point included), small; and a failing
step fails loudly, naming itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "loadtest" / "bench" / "device_check.sh"


def test_cpu_dry_run_prints_the_table(tmp_path, model_dir):
    r = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--quick", "--model", str(model_dir),
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(r.stdout[-4000:])
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert {row["target"] for row in bench["rows"]} == {"b", "snapserve", "engine-torch-fp32"}
    assert {row["sentences_per_request"] for row in bench["rows"]} == {1, 64}
    assert all(row["requests"] > 0 and row["errors"] == 0 for row in bench["rows"])
    engines = json.loads((tmp_path / "engines.json").read_text())
    assert {row["variant"] for row in engines["rows"]} >= {"torch float32", "torch bfloat16", "onnx float32"}
    assert "device check on cpu" in r.stdout and "vs B" in r.stdout and "device check done" in r.stdout
    cold = json.loads((tmp_path / "cold" / "bench.json").read_text())  # right after start, then warm
    assert [(row["target"], row["errors"]) for row in cold["rows"]] == [("snapserve", 0)] and cold["rows"][0]["requests"]
    assert "cold: 4 clients right after start" in r.stdout and "; warm " not in r.stdout  # quick: no warm 4


def test_a_failing_step_fails_loudly(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--quick", "--model", str(tmp_path / "none"),
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "DEVICE CHECK FAILED at step 'model'" in r.stderr


def test_a_step_past_the_budget_is_cut_and_named(tmp_path, model_dir):
    r = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--quick", "--model", str(model_dir),
                        "--out", str(tmp_path), "--budget_s", "25"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "DEVICE CHECK FAILED" in r.stderr
    assert "timed out" in r.stderr or "budget" in r.stderr
