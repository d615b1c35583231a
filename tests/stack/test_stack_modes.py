"""The stack's chat, collocated and scale-from-zero modes, without starting it: settings, command lines,
the transformer -> predictor hop, and the predictor nginx's answer while no predictor is up; then the
collocation benchmark, run briefly."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from loadtest.stack import nginx, replicas
from loadtest.stack.config import StackSettings, parse
from loadtest.stack.stack import Stack
from loadtest.stack.unpriv import hand_over
from tests.stack.conftest import REPO

GEN_DIR = REPO / "models" / "SmolLM2-135M-Instruct"


def snapshot(folder: Path, arch: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [arch]}))
    return folder


def test_the_task_and_the_model_name_come_from_the_snapshot(tmp_path):
    chat = StackSettings(model_dir=snapshot(tmp_path / "My-Chat", "Qwen2ForCausalLM"))
    enc = StackSettings(model_dir=snapshot(tmp_path / "all-MiniLM-L6-v2", "BertModel"))
    assert (chat.task, chat.model_name) == ("generate", "my-chat")
    assert (enc.task, enc.model_name) == ("encoder", "all-minilm-l6-v2")  # the README's curl name, as before
    assert StackSettings(model_dir=enc.model_dir, model_name="snap").model_name == "snap"


def test_impossible_modes_are_refused_with_how_to_fix(tmp_path):
    d = snapshot(tmp_path / "m", "BertModel")
    with pytest.raises(ValueError, match="as many --transformers as --predictors"):
        StackSettings(model_dir=d, collocated=True, transformers=2, predictors=1)
    with pytest.raises(ValueError, match="drop --collocated"):
        StackSettings(model_dir=d, collocated=True, scale_from_zero=True)
    with pytest.raises(SystemExit):  # the command line says the same, as argparse errors
        parse(["--model_dir", str(d), "--collocated", "--predictors", "1"])
    s = parse(["--model_dir", str(d), "--collocated"])
    assert s.collocated and not s.scale_from_zero


def test_command_lines_follow_the_task_and_the_mode(tmp_path):
    chat = StackSettings(model_dir=snapshot(tmp_path / "chat", "LlamaForCausalLM"), scale_from_zero=True)
    enc = StackSettings(model_dir=snapshot(tmp_path / "enc", "BertModel"))
    p, t = replicas.Replica("predictor-0", "predictor", 1, 2), replicas.Replica("transformer-0", "transformer", 3, 4)
    assert "--instances" not in replicas.argv(chat, p, "h")  # an encoder flag the generate predictor refuses
    assert replicas.argv(enc, p, "h")[-2:] == ["--instances", "1"]
    # at zero the transformers stay Ready (they hold the requests that wake a predictor), as the chart sets
    assert replicas.argv(chat, t, "h")[-2:] == ["--predictor_unready_after_s", "0"]
    assert "--predictor_unready_after_s" not in replicas.argv(enc, t, "h")


def test_collocated_transformers_call_their_own_predictor(tmp_path):
    d = snapshot(tmp_path / "m", "BertModel")
    for collocated in (True, False):
        stack = Stack(StackSettings(model_dir=d, collocated=collocated, workdir=tmp_path / "w"))
        hosts = [stack.predictor_host(i) for i in range(2)]
        if collocated:
            assert hosts == [f"127.0.0.1:{r.http_port}" for r in stack.predictors]
        else:
            assert hosts == [f"127.0.0.1:{stack.predictor_lb_port}"] * 2


def test_with_no_predictor_up_the_service_answers_503_unavailable():
    """nginx's own 502 (every predictor refused) becomes what the transformer holds and retries: a 503
    `unavailable` with Retry-After, as a Service with no ready endpoint refuses the connection."""
    import httpx

    from loadtest.stack.net import free_port, wait_http

    workdir = Path(tempfile.mkdtemp(prefix="snapserve-stack-503-"))
    workdir.chmod(0o755)
    api, lb, dead = free_port(), free_port(), free_port()
    try:
        conf = nginx.write_config(workdir / "nginx", api_port=api, predictor_lb_port=lb, transformer_ports=[dead],
                                  predictor_ports=[dead], max_body="1m", read_timeout_s=5,
                                  predictor_passive_health=False)
        hand_over(workdir / "nginx")
        nginx.check(workdir / "nginx", conf)
        assert "max_fails=0" in conf.read_text()
        proc = subprocess.Popen(nginx.command(workdir / "nginx", conf), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            assert wait_http(f"http://127.0.0.1:{api}/nginx/health", timeout=10)
            r = httpx.post(f"http://127.0.0.1:{lb}/v2/models/m/generate_stream", json={}, timeout=5)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error_type"] == "unavailable"
            front = httpx.get(f"http://127.0.0.1:{api}/v2/health/ready", timeout=5)
            assert front.status_code == 502  # the front door is unchanged: no transformer is a real 502
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.timeout(600)
def test_the_collocation_bench_runs_and_prints_both_figures(measured):
    assert (GEN_DIR / "model.safetensors").is_file(), "run `bash ci/setup.d/35-model-generate.sh`"
    r = subprocess.run([sys.executable, "-m", "loadtest.bench.collocation", "--requests", "3", "--rounds", "2",
                        "--max_tokens", "2", "--hop_calls", "50"], cwd=REPO, capture_output=True, text=True,
                       timeout=540)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = r.stdout
    assert re.search(r"requests: 12 ok, 0 failed", out), out
    for label in ("round 1 collocated", "round 1 via Service", "round 2 via Service", "round 2 collocated",
                  "all collocated", "all via Service", "hop alone, direct", "hop alone, via Service"):
        assert re.search(rf"^{label}\s+median\s+[\d.]+ ms\s+p90\s+[\d.]+ ms", out, re.M), f"{label} missing:\n{out}"
    saves = re.search(r"^collocation saves per request: median [+-][\d.]+ ms, p90 [+-][\d.]+ ms.*$", out, re.M)
    hop = re.search(r"^the Service hop alone costs: .*$", out, re.M)
    assert saves and hop, out
    measured(f"collocation bench (brief run): {saves.group(0)}; {hop.group(0)}")
