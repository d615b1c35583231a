"""The benchmark's load generator: several processes, each an asyncio loop of keep-alive aiohttp clients.

Closed loop: each client sends its next request as soon as the last is answered. Only responses
that complete inside the measuring window count; each one's body is checked (count and dimension
of the vectors), a wrong body or a non-200 is an error. Each process reports its own CPU time, so
the benchmark can say when the generator, not the server, was the limit.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import time
from dataclasses import dataclass

from loadtest.locust import checks

from loadtest import texts

SATURATED_CORE_FRACTION = 0.85  # a generator process this busy may be what limits throughput


@dataclass(frozen=True)
class Load:
    url: str
    sentences: int  # per request
    concurrency: int
    duration_s: float
    warmup_s: float
    dim: int = 384
    timeout_s: float = 120.0
    headers: tuple[tuple[str, str], ...] = ()


def _bodies(sentences: int, seed: int) -> list[bytes]:
    import orjson

    rng = random.Random(seed)
    return [orjson.dumps({"instances": texts.batch(rng, sentences)}) for _ in range(64)]


async def _run(load: Load, clients: int, seed: int, start_at: float) -> dict:
    import aiohttp
    import orjson

    bodies = _bodies(load.sentences, seed)
    headers = {"Content-Type": "application/json", **dict(load.headers)}
    t0 = start_at + load.warmup_s
    t1 = t0 + load.duration_s
    lat: list[float] = []
    errors: dict[str, int] = {}
    cpu: list[float] = []

    def error(kind: str) -> None:
        if t0 <= time.time() <= t1:
            errors[kind] = errors.get(kind, 0) + 1

    async def client(i: int, session) -> None:
        n = i
        while time.time() < t1:
            body = bodies[n % len(bodies)]
            n += clients
            sent = time.time()
            try:
                async with session.post(load.url, data=body, headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001  (reset, timeout: count it, keep going)
                error(type(e).__name__)
                await asyncio.sleep(0.05)
                continue
            done = time.time()
            if not (t0 <= done <= t1):
                continue
            if status != 200:
                error(f"HTTP {status}")
                await asyncio.sleep(0.05)  # a rejected client backs off instead of spinning
                continue
            try:
                problem = checks.v1(orjson.loads(raw), load.sentences, load.dim)
            except ValueError:
                problem = "not JSON"
            if problem:
                error(problem[:60])
            else:
                lat.append(done - sent)

    async def cpu_marks() -> None:
        await asyncio.sleep(max(0.0, t0 - time.time()))
        cpu.append(time.process_time())
        await asyncio.sleep(max(0.0, t1 - time.time()))
        cpu.append(time.process_time())

    await asyncio.sleep(max(0.0, start_at - time.time()))
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=load.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(clients)]
        await cpu_marks()
        # Clients still waiting on a slow answer are cut off: their answer falls outside the window.
        await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"latencies": lat, "errors": errors, "cpu_s": cpu[1] - cpu[0] if len(cpu) == 2 else 0.0}


def _worker(load: Load, clients: int, seed: int, start_at: float, out) -> None:
    try:
        out.put(asyncio.run(_run(load, clients, seed, start_at)))
    except Exception as e:  # noqa: BLE001  (report it, never hang the parent)
        out.put({"latencies": [], "errors": {f"generator: {type(e).__name__}: {e}"[:80]: 1}, "cpu_s": 0.0})


def default_processes() -> int:
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run(load: Load, processes: int | None = None, server_pids: list[int] | None = None) -> dict:
    """Drive ``load`` from several processes; returns the merged result of one measuring window.

    ``server_pids`` (with their children) are sampled over the window: their CPU use, and the whole
    machine's, tell whether the server, the generator or the box was the limit.
    """
    import numpy as np
    import psutil

    procs = max(1, min(processes or default_processes(), load.concurrency))
    shares = [load.concurrency // procs + (1 if i < load.concurrency % procs else 0) for i in range(procs)]
    ctx = mp.get_context("spawn")  # never fork a process that may hold torch or kserve state
    out = ctx.Queue()
    start_at = time.time() + 1.5 + 0.3 * procs  # time for the spawned interpreters to import aiohttp
    workers = [ctx.Process(target=_worker, args=(load, n, 1000 + i, start_at, out), daemon=True)
               for i, n in enumerate(shares)]
    for w in workers:
        w.start()
    t0 = start_at + load.warmup_s
    time.sleep(max(0.0, t0 - time.time()))
    srv0, box0 = _cpu_seconds(server_pids or []), psutil.cpu_times()
    time.sleep(max(0.0, t0 + load.duration_s - time.time()))
    srv1, box1 = _cpu_seconds(server_pids or []), psutil.cpu_times()
    busy = (sum(box1) - box1.idle - box1.iowait) - (sum(box0) - box0.idle - box0.iowait)
    deadline = start_at + load.warmup_s + load.duration_s + load.timeout_s + 30
    parts = [out.get(timeout=max(1.0, deadline - time.time())) for _ in workers]
    for w in workers:
        w.join(timeout=10)
    lat = np.array([x for p in parts for x in p["latencies"]], dtype=float) * 1000.0
    errors: dict[str, int] = {}
    for p in parts:
        for k, v in p["errors"].items():
            errors[k] = errors.get(k, 0) + v
    cpu = [p["cpu_s"] / load.duration_s for p in parts]
    ok = len(lat)

    def pct(q: float) -> float | None:
        return float(np.percentile(lat, q)) if ok else None

    return {
        "concurrency": load.concurrency,
        "sentences_per_request": load.sentences,
        "requests": ok,
        "req_per_s": ok / load.duration_s,
        "sentences_per_s": ok * load.sentences / load.duration_s,
        "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "generator": {
            "processes": procs,
            "cpu_cores_used": round(sum(cpu), 3),
            "busiest_process_core_fraction": round(max(cpu), 3),
            "saturated": max(cpu) >= SATURATED_CORE_FRACTION,
        },
        "server_cpu_cores_used": round((srv1 - srv0) / load.duration_s, 3),
        "machine_cpu_cores_busy": round(busy / load.duration_s, 3),
        "machine_cores": psutil.cpu_count(),
    }


def psutil_cores() -> int:
    import psutil

    return psutil.cpu_count() or 1
