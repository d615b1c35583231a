"""The generation bench runs end to end through ``loadtest.bench --generate`` (the smallest size: one
client, a few tokens, B and snapserve) and writes its rows; its figures are printed, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.procs import ROOT

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"


def test_the_generate_bench_runs_and_writes_its_rows(tmp_path):
    out = tmp_path / "generate.json"
    run = subprocess.run([sys.executable, "-m", "loadtest.bench", "--generate", "--quick", "--levels", "1",
                          "--targets", "B,S", "--max_tokens", "8", "--duration", "1", "--model_dir", str(MODEL),
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(run.stdout[-2000:])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["key"] for r in rows} == {"B", "S"}
    assert all(r["errors"] == 0 and r["requests"] >= 1 and r["tok_per_s"] > 0 for r in rows), rows
    assert "ratio snapserve chat stream / B  c=1" in run.stdout
