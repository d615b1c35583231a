"""NOTES.txt's curl lines and the helm test pod's script, run against the real transformer on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from tests.chart.chart_tools import CHART, NAMESPACE, find, render, run_helm


def notes_curls(model_name: str) -> list[str]:
    # fullnameOverride makes the InferenceService (and so the model) name match the local servers'.
    proc = run_helm("helm4", "install", "notes", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                    "--set", f"fullnameOverride={model_name}")
    notes = proc.stdout.split("NOTES:", 1)[1].replace("\\\n", " ")
    return [line.strip() for line in notes.splitlines() if line.strip().startswith("curl ")]


def test_notes_curl_commands_work(servers):
    assert shutil.which("curl"), "curl missing: ci/setup.d/10-apt.sh installs it"
    curls = notes_curls(servers.model_name)
    assert len(curls) == 2, curls
    env = {**os.environ, "SNAPSERVE_URL": servers.transformer_url}
    outputs = []
    for cmd in curls:
        assert re.search(r"\$SNAPSERVE_URL/", cmd), cmd
        proc = subprocess.run(["bash", "-c", cmd + " --fail-with-body"], env=env, check=False,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(json.loads(proc.stdout))
    v1, openai = outputs
    assert len(v1["predictions"]) == 1 and len(v1["predictions"][0]) == 384
    assert openai["data"][0]["object"] == "embedding" and len(openai["data"][0]["embedding"]) == 384


def run_test_pod_script(servers, **overrides) -> subprocess.CompletedProcess:
    pod = find(render("helm4", sets=(f"fullnameOverride={servers.model_name}",)), "Pod", "-test-embedding")
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BASE_URL"] == f"http://{servers.model_name}-transformer.{NAMESPACE}.svc.cluster.local"
    env.update(BASE_URL=servers.transformer_url, READY_TIMEOUT="60", **overrides)
    return subprocess.run([sys.executable, "-c", container["args"][0]], env={**os.environ, **env}, check=False,
                          capture_output=True, text=True, timeout=120)


def test_helm_test_pod_script_passes_against_the_real_transformer(servers):
    proc = run_test_pod_script(servers)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: 1 vector of 384 floats" in proc.stdout


def test_helm_test_pod_script_fails_on_a_wrong_shape(servers):
    proc = run_test_pod_script(servers, DIMENSIONS="385")
    assert proc.returncode != 0 and "expected 385 floats" in proc.stderr
