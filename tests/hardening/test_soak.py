"""Soak: steady load through the transformer and predictor (all three routes, texts of varied
length) for SNAPSERVE_SOAK_SECONDS (60 by default: the short form CI runs; lengthen it for a real
soak). Every request must succeed and resident memory must not grow by 10% after the warm-up."""

from __future__ import annotations

import asyncio
import os
import random
import time

import httpx
import pytest

from tests.hardening import load

SECONDS = float(os.environ.get("SNAPSERVE_SOAK_SECONDS", "60"))
WARMUP = min(20.0, SECONDS / 3)
RATE = 5.0  # requests/s, well under capacity: a steady state, not overload
WORDS = ("embedding serving batch token vector model query document search ranking latency queue "
         "서울 데이터 🙂 café naïve").split()


def request(i: int, rng: random.Random) -> tuple[str, dict, int]:
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(rng.randint(1, 4))]
    kind = i % 3
    if kind == 0:
        return "/v1/models/snap:predict", {"instances": texts}, len(texts)
    if kind == 1:
        return ("/v2/models/snap/infer",
                {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}, len(texts))
    return "/openai/v1/embeddings", {"model": "snap", "input": texts}, len(texts)


def rows(path: str, body: dict) -> int:
    if path.startswith("/v1"):
        return len(body["predictions"])
    if path.startswith("/v2"):
        return body["outputs"][0]["shape"][0]
    return len(body["data"])


async def soak(base: str, pids: list[int]) -> dict:
    rng = random.Random(7)
    latencies, failures = [], []
    rss_warm: dict = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        async def one(i):
            path, payload, n = request(i, rng)
            started = time.perf_counter()
            try:
                r = await http.post(path, json=payload)
                if r.status_code != 200 or rows(path, r.json()) != n:
                    failures.append(f"{path}: {r.status_code} {r.text[:200]}")
                else:
                    latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                failures.append(f"{path}: {type(exc).__name__}")

        tasks = []
        started = time.perf_counter()
        with load.RssSampler(pids, period=0.5) as rss:
            for i in range(int(RATE * SECONDS)):
                delay = started + i / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not rss_warm and time.perf_counter() - started >= WARMUP:
                    rss_warm = {pid: load.rss_bytes(pid) for pid in pids}
                    rss.peak = dict(rss_warm)  # peaks after the warm-up only
                tasks.append(asyncio.ensure_future(one(i)))
            await asyncio.gather(*tasks)
            rss_end = {pid: load.rss_bytes(pid) for pid in pids}
        return {"latencies": sorted(latencies), "failures": failures, "warm": rss_warm, "end": rss_end,
                "peak": rss.peak, "seconds": time.perf_counter() - started}


@pytest.mark.slow
def test_soak_steady_load_no_errors_no_memory_growth(servers):
    pids = {servers.predictor.proc.pid: "predictor", servers.transformer.proc.pid: "transformer"}
    result = asyncio.run(soak(servers.transformer_url, list(pids)))
    lat = result["latencies"]
    p50, p99 = (lat[int(q * (len(lat) - 1))] if lat else float("nan") for q in (0.5, 0.99))
    growth = {pid: result["peak"][pid] / result["warm"][pid] - 1 for pid in pids}
    memory = "; ".join(f"{name} {load.mib(result['warm'][pid])} after warm-up -> peak {load.mib(result['peak'][pid])}"
                       f" ({growth[pid]:+.1%}), end {load.mib(result['end'][pid])}" for pid, name in pids.items())
    print(f"\nsoak: {len(lat) + len(result['failures'])} requests in {result['seconds']:.0f} s ({RATE:g}/s, "
          f"warm-up {WARMUP:.0f} s): {len(result['failures'])} errors; p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms; RSS {memory}")
    assert not result["failures"], result["failures"][:5]
    for pid, name in pids.items():
        assert growth[pid] < 0.10, f"{name} RSS grew {growth[pid]:.1%} after the warm-up"
