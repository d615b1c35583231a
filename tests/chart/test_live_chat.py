"""The chat install on CPU (ci/generation-cpu-values.yaml): a real predictor + transformer started with the
args and env the chart renders, on the SmolLM2-135M-Instruct snapshot; NOTES' chat curl and the chat helm
test pod's script pass against them, and the script fails on a refused request."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests import procs
from tests.chart.chart_tools import CHART, NAMESPACE, find, render, run_helm

CPU_CHAT = CHART / "ci" / "generation-cpu-values.yaml"
GEN_DIR = procs.ROOT / "models" / "SmolLM2-135M-Instruct"
NAME = "smol-chat"
SETS = (f"modelName={NAME}",)
# Flags the test harness sets itself (loopback ports, the local snapshot).
OWN_FLAGS = ("--model_name", "--model_dir", "--http_port", "--grpc_port")


def chart_args(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in OWN_FLAGS:
            skip = True
        else:
            out.append(arg)
    return out


def plain_env(container: dict) -> dict[str, str]:
    # HOME=/tmp is for the read-only root filesystem of the pod; CPU_THREADS comes from the downward API.
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e and e["name"] != "HOME"}


@pytest.fixture(scope="module")
def chat(tmp_path_factory) -> str:
    """The transformer URL of a chat pair started as the CPU chat values render it."""
    if not (GEN_DIR / "model.safetensors").is_file():
        pytest.fail(f"generative model missing at {GEN_DIR}: run `bash ci/setup.d/35-model-generate.sh`")
    logs = tmp_path_factory.mktemp("chart-chat")
    isvc = find(render("helm4", CPU_CHAT, SETS), "InferenceService")["spec"]
    p, t = isvc["predictor"]["containers"][0], isvc["transformer"]["containers"][0]
    predictor, _ = procs.start_predictor(model_name=NAME, model_dir=GEN_DIR, extra=chart_args(p["args"]),
                                         env=plain_env(p), log_dir=logs, timeout=300)
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_name=NAME,
                                                 model_dir=GEN_DIR, extra=chart_args(t["args"]), env=plain_env(t),
                                                 log_dir=logs)
    except Exception:
        predictor.stop()
        raise
    yield transformer.url
    transformer.stop()
    predictor.stop()


def run_chat_test_pod_script(url: str, **overrides) -> subprocess.CompletedProcess:
    pod = find(render("helm4", CPU_CHAT, SETS), "Pod", "-test-chat")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BASE_URL"] == f"http://snapserve-transformer.{NAMESPACE}.svc.cluster.local"
    assert env["MODEL_NAME"] == NAME
    env.update(BASE_URL=url, READY_TIMEOUT="60", **overrides)
    return subprocess.run([sys.executable, "-c", container["args"][0]], env={**os.environ, **env}, check=False,
                          capture_output=True, text=True, timeout=300)


def test_chat_helm_test_pod_script_passes_against_a_real_chat_pair(chat):
    proc = run_chat_test_pod_script(chat)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"ok: chat completion of [1-9]\d* characters, finish_reason (stop|length)", proc.stdout), proc.stdout


def test_chat_helm_test_pod_script_fails_when_the_request_is_refused(chat):
    proc = run_chat_test_pod_script(chat, MODEL_NAME="not-served")
    assert proc.returncode != 0 and "chat completion answered 404" in proc.stderr, proc.stdout + proc.stderr


def test_notes_chat_curl_works(chat):
    assert shutil.which("curl"), "curl missing: ci/setup.d/10-apt.sh installs it"
    proc = run_helm("helm4", "install", "snapserve", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                    "-f", str(CPU_CHAT), "--set", SETS[0])
    notes = proc.stdout.split("NOTES:", 1)[1].replace("\\\n", " ")
    curls = [line.strip() for line in notes.splitlines() if line.strip().startswith("curl ")]
    assert len(curls) == 1 and "/openai/v1/chat/completions" in curls[0], curls
    run = subprocess.run(["bash", "-c", curls[0] + " --fail-with-body"], env={**os.environ, "SNAPSERVE_URL": chat},
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{curls[0]}\n{run.stdout}\n{run.stderr}"
    answer = json.loads(run.stdout)
    assert answer["model"] == NAME and answer["choices"][0]["message"]["content"].strip()
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
