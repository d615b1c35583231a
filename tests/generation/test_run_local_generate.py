"""The README's generation run command: `MODEL=generate bash ci/run-local.sh` serves SmolLM2, its
printed curl lines work (chat, streamed chat, the predictor's generate), Ctrl-C stops both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from tests import procs


def test_run_local_generate_prints_working_curl_lines(gen_dir):
    port, pport = procs.free_port(), procs.free_port()
    env = {**os.environ, "PORT": str(port), "PREDICTOR_PORT": str(pport), "SNAPSERVE_SKIP_SETUP": "1",
           "MODEL": "generate", "MODEL_DIR": str(gen_dir),
           # gRPC ports of their own (run-local's default, one above each HTTP port, may be taken)
           "GRPC_PORT": str(procs.free_port()), "PREDICTOR_GRPC_PORT": str(procs.free_port())}
    proc = subprocess.Popen(["bash", "ci/run-local.sh"], cwd=procs.ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    curls = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            if line.strip().startswith("curl "):
                curls.append(line.strip())
            if line.startswith("Ctrl-C") or time.monotonic() > deadline:
                break
        assert len(curls) == 3, curls
        chat, streamed, generate = (subprocess.run(["bash", "-c", c], capture_output=True, text=True,
                                                   timeout=300).stdout for c in curls)
        assert json.loads(chat)["choices"][0]["message"]["content"]
        events = [line for line in streamed.splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) > 3
        assert json.loads(generate)["text_output"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    left = subprocess.run(["pgrep", "-f", f"--http_port {pport}"], capture_output=True, text=True).stdout
    assert left == "", f"processes left behind: {left}"
