"""The README's run command: both servers start, the printed curl lines work, Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests import procs


def what_it_said(lines: list[str], stderr: Path, logs: Path) -> str:
    """run-local's own output and the end of each server's log: why no curl line came (seen once on CI)."""
    parts = ["stdout:", *lines, "stderr:", stderr.read_text(errors="replace")[-3000:]]
    for log in sorted(logs.glob("*.log")):
        parts += [f"{log.name} (end):", log.read_text(errors="replace")[-2000:]]
    return "\n".join(parts)


def test_run_local_prints_working_curl_lines_and_stops_cleanly(tmp_path):
    port, pport = procs.free_port(), procs.free_port()
    # gRPC ports of their own: run-local's default (one above each HTTP port) was taken once on a busy box
    # ("Failed to bind to address [::]:46868"), and no curl line came
    env = {**os.environ, "PORT": str(port), "PREDICTOR_PORT": str(pport), "SNAPSERVE_SKIP_SETUP": "1",
           "GRPC_PORT": str(procs.free_port()), "PREDICTOR_GRPC_PORT": str(procs.free_port()),
           "LOG_DIR": str(tmp_path / "logs")}
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        proc = subprocess.Popen(["bash", "ci/run-local.sh", "--max_delay_ms", "1"], cwd=procs.ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    curls, lines = [], []
    try:
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.strip().startswith("curl "):
                curls.append(line.strip())
            if line.startswith("Ctrl-C") or time.monotonic() > deadline:
                break
        assert len(curls) == 2, what_it_said(lines, stderr, tmp_path / "logs")
        for cmd in curls:
            out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60).stdout
            body = json.loads(out)
            vectors = body["predictions"] if "predictions" in body else [d["embedding"] for d in body["data"]]
            assert len(vectors) == 1 and len(vectors[0]) == 384
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    left = subprocess.run(["pgrep", "-f", f"--http_port {pport}"], capture_output=True, text=True).stdout
    assert left == "", f"processes left behind: {left}"
