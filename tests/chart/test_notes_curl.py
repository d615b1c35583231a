"""The curl lines NOTES.txt prints really work, run against the real transformer on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from tests.chart.chart_tools import CHART, NAMESPACE, run_helm


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
