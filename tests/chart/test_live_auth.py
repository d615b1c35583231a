"""transformer.auth end to end: a real transformer started with the env the chart renders (keys file
standing in for the mounted Secret); NOTES' curl lines with the key and the helm test pod's script pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from tests import procs
from tests.chart.chart_tools import CHART, NAMESPACE, find, render, run_helm

AUTH = CHART / "ci" / "auth-values.yaml"
KEYS = ("chart-key-0c4f1e", "chart-key-77ab90")


@pytest.fixture(scope="module")
def keyed(servers, tmp_path_factory):
    """(transformer server, keys file) with the auth-values env, model name as the local servers'."""
    folder = tmp_path_factory.mktemp("chart-auth")
    keys = folder / "keys"
    keys.write_text(f"# first line a comment, as Secrets often are\n{KEYS[0]}\n{KEYS[1]}\n")
    sets = (f"fullnameOverride={servers.model_name}",)
    c = find(render("helm4", AUTH, sets), "InferenceService")["spec"]["transformer"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    env.update(API_KEYS_FILE=str(keys))
    server, _ = procs.start_transformer(servers.predictor_url.removeprefix("http://"), model_name=servers.model_name,
                                        model_dir=servers.model_dir, log_dir=folder, env=env)
    yield server, keys
    server.stop()


def test_keyless_request_is_refused(keyed, servers):
    server, _ = keyed
    r = httpx.post(f"{server.url}/v1/models/{servers.model_name}:predict", json={"instances": ["hi"]}, timeout=30)
    assert r.status_code == 401, r.text


def test_notes_curls_with_the_api_key_work(keyed, servers):
    server, _ = keyed
    proc = run_helm("helm4", "install", "notes", str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                    "-f", str(AUTH), "--set", f"fullnameOverride={servers.model_name}")
    notes = proc.stdout.split("NOTES:", 1)[1].replace("\\\n", " ")
    curls = [line.strip() for line in notes.splitlines() if line.strip().startswith("curl ")]
    assert len(curls) == 2 and all("$SNAPSERVE_API_KEY" in c for c in curls), curls
    env = {**os.environ, "SNAPSERVE_URL": server.url, "SNAPSERVE_API_KEY": KEYS[1]}
    for cmd in curls:
        proc = subprocess.run(["bash", "-c", cmd + " --fail-with-body"], env=env, check=False,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
        body = json.loads(proc.stdout)
        vec = body["predictions"][0] if "predictions" in body else body["data"][0]["embedding"]
        assert len(vec) == 384


def test_helm_test_pod_sends_the_first_key(keyed, servers):
    server, keys = keyed
    pod = find(render("helm4", AUTH, (f"fullnameOverride={servers.model_name}",)), "Pod", "-test-embedding")
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    env.update(BASE_URL=server.url, READY_TIMEOUT="60", API_KEYS_FILE=str(keys))
    proc = subprocess.run([sys.executable, "-c", c["args"][0]], env={**os.environ, **env}, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: 1 vector of 384 floats" in proc.stdout
    # A file whose only key is wrong fails the test pod: the key really is sent and checked.
    wrong = keys.parent / "wrong"
    wrong.write_text("not-a-key\n")
    proc = subprocess.run([sys.executable, "-c", c["args"][0]], env={**os.environ, **env, "API_KEYS_FILE": str(wrong)},
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "401" in proc.stderr, proc.stdout + proc.stderr
