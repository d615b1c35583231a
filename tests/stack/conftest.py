"""The stack under test: `python -m loadtest.stack` as a user runs it, with the real default model; and
steady load for the fault tests: a few client threads posting predictions through the stack's API,
every answer checked (status 200, one 384-float embedding)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Self

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(os.environ.get("SNAPSERVE_MODEL_DIR", REPO / "models" / "all-MiniLM-L6-v2"))


TEXT = "The quick brown fox jumps over the lazy dog while the stack loses a replica."


class Load:
    """`clients` threads, together sending about `rps` requests a second: a steady arrival rate that
    leaves the 2-core box room to restart a replica, as a cluster node with spare CPU would."""

    def __init__(self, api_url: str, model: str = "snap", clients: int = 4, rps: float = 16):
        self.url = f"{api_url}/v1/models/{model}:predict"
        self.clients = clients
        self.rps = rps
        self.period_s = clients / rps
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    @property
    def total(self) -> int:
        return self.ok + sum(self.failures.values())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def _one(self, http: httpx.Client) -> str | None:
        """None when the answer is right, else why it is not."""
        try:
            r = http.post(self.url, json={"instances": [TEXT]})
        except httpx.HTTPError as e:
            return type(e).__name__
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {r.text[:120]}"
        preds = r.json().get("predictions")
        if not (isinstance(preds, list) and len(preds) == 1 and len(preds[0]) == 384):
            return "malformed body"
        return None

    def _client(self) -> None:
        with httpx.Client(timeout=60) as http:
            next_at = time.monotonic()
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at += self.period_s
                why = self._one(http)
                with self._lock:
                    if why is None:
                        self.ok += 1
                    else:
                        self.failures[why] += 1

    def wait_ok(self, more: int, timeout: float = 120) -> None:
        """Block until `more` further requests have succeeded."""
        target, deadline = self.ok + more, time.monotonic() + timeout
        while self.ok < target:
            assert time.monotonic() < deadline, f"load stalled: {self.ok}/{target} ok, failures {dict(self.failures)}"
            time.sleep(0.05)

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)

    def summary(self) -> str:
        pct = 100 * self.failed / max(1, self.total)
        return f"{self.failed}/{self.total} failed ({pct:.3f}%)" + (f" {dict(self.failures)}" if self.failed else "")


class RunningStack:
    def __init__(self, proc: subprocess.Popen, workdir: Path):
        self.proc, self.workdir = proc, workdir

    def state(self) -> dict:
        try:
            return json.loads((self.workdir / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def api(self) -> str:
        return self.state()["api"]

    @property
    def prometheus(self) -> str:
        return self.state()["prometheus"]

    def process(self, name: str) -> dict:
        return self.state()["processes"][name]

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C or a service manager would; the stack drains and stops its processes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return (self.workdir / "stack.out").read_text(errors="replace")


def start_stack(workdir: Path, *extra: str, timeout: float = 400, model_dir: Path = MODEL_DIR,
                model_name: str = "snap", env: dict | None = None) -> RunningStack:
    with open(workdir / "stack.out", "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.stack", "--model_dir", str(model_dir), "--model_name", model_name,
             "--port", "0", "--prometheus_port", "0", "--workdir", str(workdir), "--scrape_interval_s", "1", *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    stack = RunningStack(proc, workdir)
    deadline = time.monotonic() + timeout
    while not stack.state().get("ready"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            pytest.fail(f"stack did not become ready (rc={proc.returncode}):\n{stack.output()[-4000:]}")
        time.sleep(0.5)
    return stack


@pytest.fixture(scope="module")
def stack():
    # Under /tmp, not pytest's 0700 tmp_path: nginx and Prometheus run as nobody and must reach it.
    workdir = Path(tempfile.mkdtemp(prefix="snapserve-stack-test-"))
    try:
        running = start_stack(workdir)
        try:
            yield running
        finally:
            running.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def load(stack):
    """load() -> a Load on the stack's API; use it as a context manager."""
    return lambda clients=4, rps=16: Load(stack.api, clients=clients, rps=rps)


MEASURED: list[str] = []


@pytest.fixture
def measured():
    """measured(line): a number the issue asks us to quote, printed in pytest's summary even with -q."""
    return MEASURED.append


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("snapserve stack: measured")
        for line in MEASURED:
            terminalreporter.write_line(line)
