"""The device check's generation rows (tools/bench_generate.py, called by loadtest/bench/device_check.sh),
as its CPU dry run: a tiny random Qwen2-shaped model through the real engine, rows printed. Figures are
printed, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_cpu_run_prints_the_generation_rows():
    r = subprocess.run([sys.executable, "-m", "tools.bench_generate", "--quick", "--device", "cpu", "--levels", "1,3",
                        "--duration", "0.2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    print(r.stdout[-3000:])
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "random Qwen2-shaped tiny (speed only)" in r.stdout
    assert "generate c=1 " in r.stdout and "generate c=3 " in r.stdout
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert [row["clients"] for row in result["rows"]] == [1, 3]
    for row in result["rows"]:
        assert row["requests"] >= row["clients"] and row["tokens"] == row["requests"] * result["max_tokens"]
        assert row["ttft_p50_ms"] is not None and row["itl_p50_ms"] is not None
        assert row["peak_gpu_mib"] is None  # CUDA only
    assert "tools.bench_generate" in (ROOT / "loadtest" / "bench" / "device_check.sh").read_text()
