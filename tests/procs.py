"""Start real snapserve servers on loopback for tests: free ports, readiness, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(os.environ.get("SNAPSERVE_MODEL_DIR", ROOT / "models" / "all-MiniLM-L6-v2"))
TUNING_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / f"snapserve-test-tuning-{os.getpid()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process; ``stop()`` sends SIGTERM and waits, then kills."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_server(module: str, args: list[str], ready_url: str, env: dict | None = None,
                 log_dir: Path | None = None, timeout: float = 180) -> Server:
    """``python -m module args`` until ``ready_url`` answers 200; raises with the log tail if it dies."""
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log = log_dir / f"{module}-{free_port()}.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                **(env or {})}
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=full_env,
                                stdout=fh, stderr=subprocess.STDOUT)
    server = Server(proc, ready_url.split("/v2/")[0], log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited with {proc.returncode}:\n{server.tail()}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"{module} not ready after {timeout}s:\n{server.tail()}")


def start_predictor(model_name: str = "snap", model_dir: Path = MODEL_DIR, extra: list[str] = (),
                    **kw) -> tuple[Server, int]:
    """A predictor; returns (server, grpc_port). Unless ``extra`` says otherwise, its --tuning_cache is
    this test session's own, so each configuration measures once per session, not at every start."""
    http, grpc = free_port(), free_port()
    cache = [] if "--tuning_cache" in extra else ["--tuning_cache", str(TUNING_CACHE)]
    args = ["--model_name", model_name, "--model_dir", str(model_dir), "--http_port", str(http),
            "--grpc_port", str(grpc), *cache, *extra]
    return start_server("predictor", args, f"http://127.0.0.1:{http}/v2/models/{model_name}/ready", **kw), grpc


def start_transformer(predictor_host: str, model_name: str = "snap", model_dir: Path = MODEL_DIR,
                      extra: list[str] = (), **kw) -> tuple[Server, int]:
    """A transformer in front of ``predictor_host``; returns (server, grpc_port)."""
    http, grpc = free_port(), free_port()
    args = ["--model_name", model_name, "--model_dir", str(model_dir), "--predictor_host", predictor_host,
            "--http_port", str(http), "--grpc_port", str(grpc), *extra]
    return start_server("transformer", args, f"http://127.0.0.1:{http}/v2/models/{model_name}/ready", **kw), grpc
