"""The generation rows of the benchmark: 1 / 8 / 32 concurrent clients, 64 new tokens each (greedy), three
targets in this process tree on the same snapshot (default models/SmolLM2-135M-Instruct) and prompts:

    python -m loadtest.bench.generate [--quick] [--levels 1,8,32] [--max_tokens 64] [--duration 20] [--rounds 2]
                                      [--llama_server PATH]   # or LLAMA_SERVER=PATH

- **A, seed pattern**: FastAPI + ``model.generate``, one request at a time (loadtest/bench/baselines/generate_hf.py);
- **B, plain KServe**: a ``kserve.Model`` whose ``predict`` calls ``generate`` (loadtest/bench/baselines/generate_kserve.py);
- **snapserve** (S): predictor (continuous batching) + transformer, ``/openai/v1/chat/completions`` streamed;
  **R**, opt-in: the same as a cluster runs it on these cores, ``--replicas`` predictor replicas of one core
  each behind the local stack's nginx (loadtest/stack); **I**, opt-in (``--targets ...,I``): the same with ``--generate_weights int8`` and its greedy-agreement bound
  off (for its speed: SmolLM2 fails that bound, so a default start refuses int8); **F**, opt-in: the same
  with ``--dtype float32`` (S takes ``--dtype auto``: bf16 on a CPU with native bf16, within its gate);
- **llama.cpp** (L: F32, the same weights; Q: the Q4_1 GGUF they come from), when given a ``llama-server``
  (loadtest/bench/llama.py); a skip line otherwise. The same streamed chat, a new connection per request.

Each level is a closed loop: every client sends requests back to back until ``--duration`` has passed, then
finishes the one in flight. tokens/s = completion tokens / (first send to last answer). TTFT: the first
content delta of a stream; A and B do not stream, so their first token reaches the client with the whole
answer (TTFT = latency) and they have no ITL. ITL: gaps between content deltas (a delta may carry more than
one token when the detokeniser holds back a split character). Ratios are against B at the same level,
and snapserve's against llama.cpp F32 (int8's against Q4_1 too), each within its own round.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from loadtest import texts
from loadtest.bench import llama, report
from loadtest.bench.procs import REPO_ROOT, Server, free_port, python

DEFAULT_MODEL = REPO_ROOT / "models" / "SmolLM2-135M-Instruct"
# A and B have no deadline; snapserve's (25-30 s) would turn a slow 32-client level on a busy CPU into 504s
NO_DEADLINE = ("--request_timeout_ms", "600000")


def prompts(n: int = 64) -> list[str]:
    rng = random.Random(0)
    return [f"Write a short story about this: {texts.single(rng)}" for _ in range(n)]


async def one_plain(session, url: str, prompt: str, max_tokens: int) -> tuple[int, float, list[float]]:
    started = time.perf_counter()
    async with session.post(url, json={"prompt": prompt, "max_new_tokens": max_tokens}) as r:
        body = await r.json(content_type=None)
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {str(body)[:200]}")
    return body["completion_tokens"], time.perf_counter() - started, []


async def one_stream(session, url: str, prompt: str, max_tokens: int, model: str) -> tuple[int, float, list[float]]:
    payload = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
               "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    stamps, tokens = [], 0
    async with session.post(url, json=payload) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {(await r.text())[:200]}")
        async for raw in r.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(str(event["error"])[:200])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError("stream carried no content")
    tokens = tokens or len(stamps)  # a server without stream_options' usage: one token a delta
    return tokens, stamps[0] - started, [b - a for a, b in itertools.pairwise(stamps)]


async def level(call, clients: int, duration: float, fresh: bool = False) -> dict:
    """``fresh``: a new connection per request (llama-server drops a kept-alive one after a stream)."""
    import aiohttp

    bodies = prompts()
    ttft, itl, tokens, errors = [], [], 0, 0
    start = time.perf_counter()
    stop = start + duration

    async def client(i: int, session) -> None:
        nonlocal tokens, errors
        n = i
        while True:
            try:
                got, first, gaps = await call(session, bodies[n % len(bodies)])
                tokens += got
                ttft.append(first)
                itl.extend(gaps)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1
            n += clients
            if time.perf_counter() >= stop:
                return

    connector = aiohttp.TCPConnector(limit=0, force_close=fresh)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600), connector=connector) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    wall = time.perf_counter() - start
    ttft.sort()
    itl.sort()

    def pct(xs, q):
        return xs[min(len(xs) - 1, int(len(xs) * q))] * 1e3 if xs else None

    return {"clients": clients, "requests": len(ttft), "errors": errors, "tokens": tokens, "wall_s": wall,
            "tok_per_s": tokens / wall, "ttft_p50_ms": pct(ttft, 0.5), "ttft_p99_ms": pct(ttft, 0.99),
            "itl_p50_ms": pct(itl, 0.5)}


def ready(url: str, body: dict, servers: list[Server], timeout_s: float = 300) -> None:
    """Until one real request answers 200; a refused request or a dead server stops the wait at once."""
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for server in servers:
            if server.proc and server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited; see {server.log_path}:\n{server.tail()}")
        try:
            r = httpx.post(url, json=body, timeout=60)
            if r.status_code == 200:
                return
            if r.status_code in (400, 404, 405, 422) and "model" not in r.text.lower():
                raise RuntimeError(f"{url} refuses the bench's request: HTTP {r.status_code} {r.text[:200]}")
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s")


def snapserve(label: str, key: str, a, logs: Path, *predictor_args: str) -> tuple:
    model_dir, pred, trans = str(a.model_dir), free_port(), free_port()
    return (label, key, [
        Server(f"predictor-{key}", python("-m", "predictor", "--task", "generate", "--model_name", "gen", "--model_dir",
                                          model_dir, "--http_port", str(pred), "--grpc_port", str(free_port()),
                                          "--device", a.device, *NO_DEADLINE, *predictor_args), logs),
        Server(f"transformer-{key}", python("-m", "transformer", "--model_name", "gen", "--model_dir", model_dir,
                                            "--predictor_host", f"127.0.0.1:{pred}", "--http_port", str(trans),
                                            "--grpc_port", str(free_port()), *NO_DEADLINE), logs)],
        f"http://127.0.0.1:{trans}/openai/v1/chat/completions", "gen")


def targets(a, logs: Path) -> list[tuple]:
    model_dir, out = str(a.model_dir), []
    port = free_port()
    out.append(("A FastAPI + generate", "A", [
        Server("baseline-a", python("-m", "loadtest.bench.baselines.generate_hf", "--model_dir", model_dir,
                                    "--port", str(port)), logs)], f"http://127.0.0.1:{port}/generate", None))
    port = free_port()
    out.append(("B plain KServe generate", "B", [
        Server("baseline-b", python("-m", "loadtest.bench.baselines.generate_kserve", "--model_dir", model_dir, "--http_port",
                                    str(port), "--grpc_port", str(free_port())), logs)],
        f"http://127.0.0.1:{port}/v1/models/gen:predict", None))
    out.append(snapserve("snapserve chat stream", "S", a, logs))
    if "F" in a.targets:  # the same precision as llama.cpp F32 (S is --dtype auto: bf16 where the CPU has it)
        out.append(snapserve("snapserve fp32 chat stream", "F", a, logs, "--dtype", "float32"))
    if "I" in a.targets:  # int8's speed: its greedy-agreement bound off (SmolLM2 fails it), the perplexity one kept
        out.append(snapserve("snapserve int8 chat stream (agreement gate off)", "I", a, logs, "--generate_weights",
                             "int8", "--generate_gate_min_agreement", "0"))
    if "R" in a.targets:
        out.append(replicas(a, logs))
    return out + llama.targets(a.llama_server, a.targets, logs, max(a.levels))


def replicas(a, logs: Path) -> tuple:
    """R: snapserve as a cluster would run it on these cores, one predictor replica per core (``--replicas``): the
    local stack (loadtest/stack: nginx route -> transformer -> nginx Service -> predictors, each predictor given
    its share of the cores as a pod's CPU limit would). The engine's step is mostly small operators that one
    thread runs as fast as two, so replicas of one core each use the cores that a second OpenMP thread leaves
    idle."""
    port = free_port()
    argv = python("-m", "loadtest.stack", "--model_dir", str(a.model_dir), "--model_name", "gen", "--port", str(port),
                  "--prometheus_port", str(free_port()), "--predictor_lb_port", str(free_port()), "--transformers", "1",
                  "--predictors", str(a.replicas), "--workdir", tempfile.mkdtemp(prefix="bench-generate-stack-"))
    env = {"WARMUP": "true", "REQUEST_TIMEOUT_MS": NO_DEADLINE[1], "DEVICE": a.device}
    return (f"snapserve, {a.replicas} predictor replicas", "R", [Server("stack-r", argv, logs, env)],
            f"http://127.0.0.1:{port}/openai/v1/chat/completions", "gen")


def fmt(v) -> str:
    return f"{v:8.0f}" if v is not None else "       -"


def caller(a, url: str, model: str | None):
    """(probe body, call(session, prompt)) for a target: a streamed chat, or A and B's plain request."""
    if model:
        probe = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        return probe, lambda s, p: one_stream(s, url, p, a.max_tokens, model)
    return {"prompt": "hi", "max_new_tokens": 2}, lambda s, p: one_plain(s, url, p, a.max_tokens)


def run_target(a, rnd: int, label: str, key: str, servers: list[Server], url: str, model: str | None) -> list[dict]:
    probe, call = caller(a, url, model)
    fresh = key in llama.KINDS
    rows = []
    try:
        for server in servers:
            server.start()
        for server in servers:
            if isinstance(server, llama.LlamaServer):
                server.wait_health()
        ready(url, probe, servers)
        asyncio.run(level(call, 1, 0, fresh))  # warm-up: one request
        for clients in a.levels:
            r = {"target": label, "key": key, "round": rnd, **asyncio.run(level(call, clients, a.duration, fresh))}
            rows.append(r)
            print(f"{label:<36} c={clients:<3} {r['tok_per_s']:8.1f} tok/s  TTFT p50 {fmt(r['ttft_p50_ms'])} ms "
                  f"p99 {fmt(r['ttft_p99_ms'])} ms  ITL p50 {fmt(r['itl_p50_ms'])} ms  "
                  f"reqs {r['requests']} errors {r['errors']}", flush=True)
    finally:
        for server in reversed(servers):
            server.stop()
    return rows


def run(a) -> list[dict]:
    """Every target in turn, ``--rounds`` times interleaved (A, B, S, L, A, B, S, L): one server at a time."""
    logs = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    rows = []
    for rnd in range(a.rounds):
        for label, key, servers, url, model in targets(a, logs):
            if key in a.targets:
                rows += run_target(a, rnd, label, key, servers, url, model)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench.generate", description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--device", default="cpu")
    p.add_argument("--levels", default="1,8,32", help="concurrent clients per level, comma-separated")
    p.add_argument("--targets", default="A,B,S,L,Q",
                   help="which of A, B, S (snapserve), F (snapserve fp32), I (snapserve int8), R (snapserve as "
                        "--replicas predictor replicas behind the local stack), L (llama.cpp F32), "
                        "Q (llama.cpp Q4_1) "
                        "to run; L and Q only with a llama-server")
    p.add_argument("--llama_server", default=None,
                   help=f"path of a built llama.cpp's llama-server (env {llama.ENV}); absent: the llama.cpp "
                        "targets are skipped")
    p.add_argument("--rounds", type=int, default=1, help="run every target this many times, interleaved")
    p.add_argument("--replicas", type=int, default=max(1, os.cpu_count() or 1),
                   help="R's predictor replicas (default one per core)")
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--duration", type=float, default=None, help="seconds each level keeps sending (20; quick 3)")
    p.add_argument("--quick", action="store_true", help="short levels: each client sends about one request")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "bench" / "generate.json")
    a = p.parse_args(argv)
    a.levels = [int(x) for x in a.levels.split(",")]
    a.targets = set(a.targets.upper().split(","))
    a.duration = a.duration if a.duration is not None else (3.0 if a.quick else 20.0)
    a.llama_server = llama.server_path(a.llama_server)
    print(f"generate bench: clients {a.levels}, {a.max_tokens} new tokens (greedy), {a.duration:.0f} s per level, "
          f"snapshot {a.model_dir}", flush=True)
    if a.llama_server is None:
        if a.targets & set(llama.KINDS):
            print(llama.SKIP, flush=True)
    else:
        llama.check_binary(a.llama_server)
        print(f"llama.cpp: {a.llama_server}", flush=True)
    rows = run(a)
    print()
    print(report.generation_table(rows))
    for line in report.generation_ratios(rows):
        print(line)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"max_tokens": a.max_tokens, "llama_server": str(a.llama_server or ""),
                                 "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
