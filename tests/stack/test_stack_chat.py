"""The local stack serving a chat snapshot (SmolLM2-135M-Instruct), scaled from zero: with no predictor
running, chat requests through nginx are held by the transformers (snapserve_requests_awaiting_predictor
above 0, on their /metrics and in Prometheus); the stack's activator, polling Prometheus with the chart's
ScaledObject query, starts the predictor; every held request is answered. Then Prometheus scrapes the
engine's gauges, and locust's chat users run through nginx with the SLO gate. Tests run in file order
on one stack."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.loadtest.test_locust import locust, stats
from tests.stack.conftest import REPO, RunningStack, start_stack
from tests.stack.waiting import wait_for

pytestmark = pytest.mark.timeout(900)
GEN_DIR = REPO / "models" / "SmolLM2-135M-Instruct"
MODEL = "smol"
HELD = 6  # requests sent while no predictor runs
# Generous on purpose: on a shared 2-core box the predictor's start alone took 10-30 s. The stack's
# transformers cap a client's deadline with --request_timeout_ms (REQUEST_TIMEOUT_MS below), as the
# chart's scale-to-zero values raise transformer.timeouts.requestMs.
DEADLINE_MS = 120_000
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 8, "temperature": 0}


def start_chat_stack(workdir: Path, *extra: str, timeout: float = 300) -> RunningStack:
    env = {**os.environ, "WARMUP": "true", "REQUEST_TIMEOUT_MS": str(DEADLINE_MS)}  # warm-up: the chart's default
    return start_stack(workdir, "--read_timeout_s", str(DEADLINE_MS // 1000 + 30), *extra, timeout=timeout,
                       model_dir=GEN_DIR, model_name=MODEL, env=env)


@pytest.fixture(scope="module")
def chat_stack():
    assert (GEN_DIR / "model.safetensors").is_file(), "run `bash ci/setup.d/35-model-generate.sh`"
    workdir = Path(tempfile.mkdtemp(prefix="snapserve-stack-chat-"))  # nobody (nginx) must reach it
    try:
        running = start_chat_stack(workdir, "--scale_from_zero", "--predictors", "1", "--transformers", "2")
        try:
            yield running
        finally:
            running.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def held_on_transformers(stack: RunningStack) -> float:
    total = 0.0
    for p in stack.state()["processes"].values():
        if p["component"] == "transformer":
            text = httpx.get(f"{p['url']}/metrics", timeout=5).text
            m = re.search(r"^snapserve_requests_awaiting_predictor\{[^}]*\} (\S+)$", text, re.M)
            total += float(m.group(1)) if m else 0.0
    return total


def prom_value(stack: RunningStack, promql: str) -> float | None:
    r = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    result = r["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def log_times(log: Path) -> dict[str, float]:
    """time.time() of the predictor's start-up milestones, from its log's timestamps (local time)."""
    marks = {"settings read": "] settings: ", "weights hashed": "snapshot manifest verified",
             "model loaded": "task=generate device=",
             "warm-up done": "] max body ", "serving": "Uvicorn running on"}
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        for name, needle in marks.items():
            if name not in found and needle in line:
                found[name] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return found


def test_held_requests_wake_the_predictor_from_zero_and_all_are_answered(chat_stack, measured):
    stack = chat_stack
    assert "predictor-0" not in stack.state()["processes"], "a predictor runs before any request"
    results: list[tuple[int, float, str]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            r = httpx.post(f"{stack.api}/openai/v1/chat/completions", json=CHAT, timeout=DEADLINE_MS / 1000 + 30,
                           headers={"x-request-timeout-ms": str(DEADLINE_MS), "x-request-id": f"cold-{i}"})
            ok = r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])
            outcome = (r.status_code if ok else -r.status_code, time.time(), r.text[:200])
        except httpx.HTTPError as e:
            outcome = (0, time.time(), type(e).__name__)
        with lock:
            results.append(outcome)

    sent = time.time()
    clients = [threading.Thread(target=one, args=(i,)) for i in range(HELD)]
    for t in clients:
        t.start()
    # held: the transformers count them, and Prometheus sees them (the ScaledObject's trigger query)
    held = wait_for(lambda: held_on_transformers(stack), timeout=30, what="held requests on the transformers")
    in_prom = wait_for(lambda: prom_value(stack, 'sum(snapserve_requests_awaiting_predictor{component="transformer"})'),
                       timeout=30, what="held requests in Prometheus")
    assert held > 0 and in_prom > 0
    assert not results, f"answered with no predictor: {results}"

    proc = wait_for(lambda: stack.state()["processes"].get("predictor-0"), timeout=60,
                    what="the activator to start the predictor")
    started = proc["started_at"]
    url = stack.state()["predictors"]["predictor-0"]
    ready = None
    while len(results) < HELD:
        if ready is None and time.time() - started < 600:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    ready = time.time()
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
        # a guard against a hang, not a timing: every held request must end by its own deadline (the
        # transformer answers 503/504 then); a minute past it means one was lost
        assert time.time() - sent < DEADLINE_MS / 1000 + 60, f"requests still held: {results}"
    for t in clients:
        t.join()

    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)}/{HELD} held requests failed: {failed}"
    first = min(r[1] for r in results)
    marks = log_times(stack.workdir / "logs" / "predictor-0.log")
    steps, prev = [], ("process start", started)
    for name, at in sorted([*marks.items(), *([("Ready", ready)] if ready else []), ("first answer", first)],
                           key=lambda kv: kv[1]):
        steps.append(f"{prev[0]} -> {name} {at - prev[1]:.1f} s")
        prev = (name, at)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    measured(f"cold start from zero (chat, SmolLM2-135M, CPU, warm-up on): first answer {first - started:.1f} s "
             f"after the predictor's process start; {HELD}/{HELD} held requests answered, 0 failed "
             f"(load average {load} on {os.cpu_count()} cores)")
    measured("  split: " + "; ".join(steps))
    measured(f"  before it: first request sent -> held seen by Prometheus -> activator started the predictor "
             f"{started - sent:.1f} s (scrape and poll interval 1 s); last answer {max(r[1] for r in results) - started:.1f} s "
             "after the process start")
    wait_for(lambda: held_on_transformers(stack) == 0, timeout=10, what="the held gauge back to 0")


def test_prometheus_scrapes_the_engine_gauges_through_the_stack(chat_stack):
    stack = chat_stack
    httpx.post(f"{stack.api}/openai/v1/chat/completions", json=CHAT, timeout=120).raise_for_status()
    pod = 'component="predictor", pod="predictor-0"'
    for promql in (f"snapserve_kv_cache_usage_perc{{{pod}}}", f"snapserve_num_requests_running{{{pod}}}",
                   f"snapserve_num_requests_waiting{{{pod}}}", f"snapserve_time_to_first_token_seconds_count{{{pod}}}",
                   'snapserve_requests_awaiting_predictor{component="transformer"}'):
        def scraped(q=promql):  # [value] once Prometheus has the series (a list: 0 is a value too)
            value = prom_value(stack, q)
            return None if value is None else [value]

        assert wait_for(scraped, timeout=30, what=promql)[0] >= 0, promql
    assert wait_for(lambda: (prom_value(stack, f"snapserve_time_to_first_token_seconds_count{{{pod}}}") or 0) >= 1,
                    timeout=30, what="a TTFT observation in Prometheus")


def test_locust_chat_users_through_nginx_pass_the_slo_gate(chat_stack, tmp_path, measured):
    target = type("Target", (), {"transformer_url": chat_stack.api, "model_name": MODEL})
    prefix = tmp_path / "run"
    env = {"SNAPSERVE_TASK": "generate", "SNAPSERVE_MAX_TOKENS": "8"}
    # --stop-timeout: in-flight generations finish and count (a busy CPU box can take seconds each)
    r = locust(target, tmp_path, "-u", "3", "-r", "3", "-t", "10s", "--stop-timeout", "120", "--csv", str(prefix),
               "--slo-p99-ms", "120000", "--slo-max-failure-ratio", "0", "ChatStreamUser", "CompletionsUser",
               env=env, timeout=240)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "SLO met" in r.stderr
    rows = stats(prefix)
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0, total
    assert int(rows["chat stream"]["Request Count"]) > 0 and int(rows["completions"]["Request Count"]) > 0, sorted(rows)
    served = (chat_stack.workdir / "nginx" / "api.access.log").read_text()
    assert "/openai/v1/chat/completions" in served and "/openai/v1/completions" in served  # through nginx
    measured(f"locust chat users through nginx: {total['Request Count']} entries, 0 failed, "
             f"chat stream median {rows['chat stream']['Median Response Time']} ms")

    # the gate's exit code: an SLO nothing can meet fails the run with 3
    r = locust(target, tmp_path, "-u", "1", "-r", "1", "-t", "3s", "--stop-timeout", "60", "--slo-p99-ms", "1",
               "CompletionsUser", env=env, timeout=120)
    assert r.returncode == 3, (r.stdout + r.stderr)[-3000:]
