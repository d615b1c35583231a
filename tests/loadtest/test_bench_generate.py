"""The generation bench runs end to end through ``loadtest.bench --generate`` (the smallest size: one
client, a few tokens, B and snapserve) and writes its rows; its figures are printed, never asserted. The
llama.cpp targets are never run here (llama.cpp stays out of CI): their skip line, and their arguments."""

from __future__ import annotations

import json
import os
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


def test_without_a_llama_server_the_llama_targets_are_skipped_with_a_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LLAMA_SERVER"}
    out = tmp_path / "generate.json"
    run = subprocess.run([sys.executable, "-m", "loadtest.bench", "--generate", "--targets", "L,Q", "--levels", "1",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "llama.cpp: skipped (no llama-server: set --llama_server or LLAMA_SERVER)" in run.stdout
    assert json.loads(out.read_text())["rows"] == []


def test_the_llama_targets_run_llama_server_on_the_same_weights(tmp_path, monkeypatch):
    from loadtest.bench import llama

    binary = tmp_path / "bin" / "llama-server"
    monkeypatch.setenv("LLAMA_SERVER", str(binary))
    assert llama.server_path(None) == binary
    assert llama.server_path(str(tmp_path / "other")) == tmp_path / "other"  # the flag wins over the env var
    q4 = llama.q4_1_gguf()
    assert q4.name.endswith("Q4_1.gguf") and q4.is_file()
    assert llama.quantize_argv(binary.with_name("llama-quantize"), q4, tmp_path / "x.gguf", "F32") == [
        str(binary.with_name("llama-quantize")), "--allow-requantize", str(q4), str(tmp_path / "x.gguf"), "F32"]
    cache = tmp_path / "cache"
    cache.mkdir()
    f32 = cache / q4.name.replace("Q4_1", "F32")
    f32.write_bytes(b"GGUF")  # already made: no llama-quantize run
    rows = llama.targets(binary, {"S", "L", "Q"}, tmp_path, max_clients=128, cache=cache)
    assert [(key, server.argv[:3]) for _, key, [server], _, _ in rows] == [
        ("L", [str(binary), "-m", str(f32)]), ("Q", [str(binary), "-m", str(q4)])]
    argv = rows[0][2][0].argv
    assert argv[argv.index("-np") + 1] == "128" and argv[argv.index("-t") + 1] == "2"
    assert int(argv[argv.index("-c") + 1]) >= 128 * 256  # each slot holds a prompt and 64 new tokens
    assert rows[0][3].endswith("/v1/chat/completions")
    assert llama.targets(None, {"L", "Q"}, tmp_path, 32) == []
