"""What collocation saves per request: a chat request's latency when the transformer reaches the predictor
on localhost (the chart's ``collocated: true``, one pod) versus through the predictor Service (here the
local stack's nginx in front of the predictors, the chart's default path):

    python -m loadtest.bench.collocation [--requests 20] [--rounds 2] [--max_tokens 4]

One local stack with ``--collocated`` (transformer-0 calls predictor-0 on localhost), plus one more
transformer whose ``--predictor_host`` is the stack's predictor nginx. Both transformers call the same
predictor, so the only difference is the hop. The client calls each transformer directly (the gateway in
front of either is the same). Requests are sequential, non-streamed, greedy, ``--max_tokens`` each, in
blocks that alternate collocated / via Service ``--rounds`` times (ABBA...: a drift in the machine's load
falls on both); every answer is checked (200, text). Prints the median and p90 per block and per setup,
and the difference (via Service minus collocated).

A chat request's latency on a busy CPU varies by far more than one loopback hop, so the hop alone is
measured too: the predictor's ``/v2/health/ready`` called directly and through the Service nginx,
alternating per call (``--hop_calls`` each), which is the one extra HTTP exchange a non-collocated chat
request makes (the transformer's one ``generate_stream`` call per request).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from loadtest.bench.procs import REPO_ROOT, Server, free_port, python

DEFAULT_MODEL = REPO_ROOT / "models" / "SmolLM2-135M-Instruct"
MODEL = "smol"
SETUPS = ("collocated", "via Service")


def chat(url: str, max_tokens: int, timeout: float = 120.0) -> tuple[float, str | None]:
    """Seconds for one chat completion and None, or why it failed."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": max_tokens, "temperature": 0}
    req = urllib.request.Request(f"{url}/openai/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            answer = json.loads(r.read())
    except urllib.error.HTTPError as e:
        return time.perf_counter() - started, f"HTTP {e.code}: {e.read()[:200]!r}"
    except OSError as e:
        return time.perf_counter() - started, type(e).__name__
    took = time.perf_counter() - started
    text = (answer.get("choices") or [{}])[0].get("message", {}).get("content")
    return took, None if text else f"no text in {str(answer)[:200]}"


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):7.2f} ms  p90 {p90(ms):7.2f} ms  (n={len(ms)})"


class Stack:
    """``python -m loadtest.stack --collocated`` with one transformer and one predictor, as a user runs it."""

    def __init__(self, model_dir: Path, workdir: Path):
        self.workdir = workdir
        self.out = (workdir / "stack.out").open("wb")
        self.proc = subprocess.Popen(
            python("-m", "loadtest.stack", "--model_dir", str(model_dir), "--model_name", MODEL, "--collocated",
                   "--transformers", "1", "--predictors", "1", "--port", "0", "--prometheus_port", "0",
                   "--workdir", str(workdir)),
            cwd=REPO_ROOT, stdout=self.out, stderr=subprocess.STDOUT)

    def state(self) -> dict:
        try:
            return json.loads((self.workdir / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def wait_ready(self, timeout_s: float = 400) -> dict:
        deadline = time.monotonic() + timeout_s
        while not self.state().get("ready"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the stack did not become ready:\n"
                                   + (self.workdir / "stack.out").read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        return self.state()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def hop_alone(direct: str, service: str, calls: int) -> dict[str, list[float]]:
    """ms per GET /v2/health/ready, direct and through the Service, alternating; one kept-alive
    connection each, as the transformer's pooled client keeps one."""
    import http.client

    conns = {name: http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
             for name, url in (("direct", direct), ("via Service", service))}
    ms: dict[str, list[float]] = {name: [] for name in conns}
    try:
        for i in range(calls * 2 + 20):
            name = ("direct", "via Service")[i % 2]
            started = time.perf_counter()
            conns[name].request("GET", "/v2/health/ready")
            r = conns[name].getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{name} readiness answered {r.status}")
            if i >= 20:  # the first calls open the connections
                ms[name].append((time.perf_counter() - started) * 1000)
    finally:
        for c in conns.values():
            c.close()
    return ms


def run(model_dir: Path, requests: int, rounds: int, max_tokens: int, workdir: Path, hop_calls: int = 500) -> dict:
    stack = Stack(model_dir, workdir)
    extra = None
    try:
        state = stack.wait_ready()
        direct = state["processes"]["transformer-0"]["url"]
        service = state["predictor_service"].removeprefix("http://")
        port = free_port()
        extra = Server("transformer-via-service", python(
            "-m", "transformer", "--model_name", MODEL, "--model_dir", str(model_dir), "--http_port", str(port),
            "--grpc_port", str(free_port()), "--predictor_host", service), workdir / "logs").start()
        via = f"http://127.0.0.1:{port}"
        urls = dict(zip(SETUPS, (direct, via), strict=True))
        deadline = time.monotonic() + 300
        while chat(via, 1, timeout=30)[1] is not None:  # until the extra transformer answers through the Service
            if extra.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{extra.name} did not answer:\n{extra.tail()}")
            time.sleep(0.5)
        for url in urls.values():  # warm both paths: connections, the detokeniser, the engine's first shapes
            for _ in range(3):
                chat(url, max_tokens)
        blocks: list[tuple[str, list[float]]] = []
        failed: list[str] = []
        for r in range(rounds):
            for setup in (SETUPS if r % 2 == 0 else SETUPS[::-1]):
                ms = []
                for _ in range(requests):
                    took, why = chat(urls[setup], max_tokens)
                    if why:
                        failed.append(f"{setup}: {why}")
                    else:
                        ms.append(took * 1000)
                blocks.append((f"round {r + 1} {setup}", ms))
                print(f"{blocks[-1][0]:<24} {summary(ms)}", flush=True)
        pooled = {s: [x for name, ms in blocks if name.endswith(s) for x in ms] for s in SETUPS}
        print(f"{'all collocated':<24} {summary(pooled['collocated'])}")
        print(f"{'all via Service':<24} {summary(pooled['via Service'])}")
        d_med = statistics.median(pooled["via Service"]) - statistics.median(pooled["collocated"])
        d_p90 = p90(pooled["via Service"]) - p90(pooled["collocated"])
        print(f"collocation saves per request: median {d_med:+.2f} ms, p90 {d_p90:+.2f} ms "
              f"(via Service minus collocated; {max_tokens} tokens, greedy, sequential)")
        hop = hop_alone(state["predictors"]["predictor-0"], state["predictor_service"], hop_calls)
        print(f"{'hop alone, direct':<24} {summary(hop['direct'])}")
        print(f"{'hop alone, via Service':<24} {summary(hop['via Service'])}")
        h_med = statistics.median(hop["via Service"]) - statistics.median(hop["direct"])
        h_p90 = p90(hop["via Service"]) - p90(hop["direct"])
        print(f"the Service hop alone costs: median {h_med:+.3f} ms, p90 {h_p90:+.3f} ms per call "
              "(predictor readiness, direct vs through nginx, alternating per call)")
        print(f"requests: {sum(len(ms) for _, ms in blocks)} ok, {len(failed)} failed" + (f": {failed[:5]}" if failed else ""))
        return {"blocks": blocks, "failed": failed, "saves_median_ms": d_med, "saves_p90_ms": d_p90,
                "hop_median_ms": h_med, "hop_p90_ms": h_p90}
    finally:
        if extra:
            extra.stop()
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench.collocation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", default=str(DEFAULT_MODEL), help="a chat (causal LM) snapshot")
    p.add_argument("--requests", type=int, default=20, help="requests per block")
    p.add_argument("--rounds", type=int, default=2, help="times the two setups alternate")
    p.add_argument("--max_tokens", type=int, default=4, help="max_tokens of each request")
    p.add_argument("--hop_calls", type=int, default=500, help="readiness calls per path for the hop alone")
    a = p.parse_args(argv)
    # under /tmp: nginx runs as nobody when we are root, and must reach the work folder
    with tempfile.TemporaryDirectory(prefix="snapserve-collocation-") as tmp:
        Path(tmp).chmod(0o755)
        result = run(Path(a.model_dir).resolve(), a.requests, a.rounds, a.max_tokens, Path(tmp), a.hop_calls)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
