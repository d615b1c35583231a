"""An open-loop load in a process of its own (its client work must not stall the measuring test):

    python -m tests.resilience.openloop URL RATE SECONDS BATCH [--key KEY] [--timeout_s T]

sends BATCH sentences a request at RATE requests/s for SECONDS, each with a client timeout of T s
(the client hangs up then) and ``x-request-timeout-ms`` saying so, and prints JSON: the answers by
status ("timeout": hung up), and the latencies in seconds of the 200s and of the 429s, and the refusals' reasons."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

import aiohttp


async def closed_loop(url: str, clients: int, seconds: float, batch: int, headers: dict | None = None) -> float:
    """Requests per second ``clients`` sending ``batch`` sentences back to back serve (capacity)."""
    body = {"instances": [f"a sentence to measure capacity, number {i}" for i in range(batch)]}
    done, stop = 0, time.monotonic() + seconds
    async with aiohttp.ClientSession(headers=headers or {}) as http:
        async def client():
            nonlocal done
            while time.monotonic() < stop:
                async with http.post(url, json=body) as r:
                    assert r.status == 200, await r.text()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.monotonic() - started)


def start(url: str, rate: float, seconds: float, batch: int, key: str = "", timeout_s: float = 10.0):
    """This module's open loop in a process of its own; ``.communicate()[0]`` is its JSON."""
    import subprocess
    import sys
    from pathlib import Path

    cmd = [sys.executable, "-m", "tests.resilience.openloop", url, f"{rate}", f"{seconds}", f"{batch}",
           "--key", key, "--timeout_s", f"{timeout_s}"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])


async def run(url: str, rate: float, seconds: float, batch: int, key: str, timeout_s: float) -> dict:
    counts: dict[str, int] = {}
    reasons: dict[str, int] = {}
    latencies: dict[str, list[float]] = {"200": [], "429": []}
    body = {"instances": [f"an open-loop sentence, number {i}" for i in range(batch)]}
    headers = {"x-request-timeout-ms": str(int(timeout_s * 1000))}
    if key:
        headers["authorization"] = f"Bearer {key}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        async def one():
            started = time.perf_counter()
            try:
                async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                    answer = await r.read()
                    status = str(r.status)
                if r.status != 200:  # what refused it, the numbers left out
                    reason = re.sub(rb"[0-9.]+", b"N", answer[:90]).decode("utf-8", "replace")
                    reasons[reason] = reasons.get(reason, 0) + 1
            except (TimeoutError, aiohttp.ClientError):
                status = "timeout"
            counts[status] = counts.get(status, 0) + 1
            if status in latencies:
                latencies[status].append(time.perf_counter() - started)

        sent, started = [], time.monotonic()
        for i in range(int(rate * seconds)):  # on schedule, whatever the answers do (open loop)
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            sent.append(asyncio.ensure_future(one()))
        await asyncio.gather(*sent)
    return {"counts": counts, "latencies": latencies, "seconds": seconds, "reasons": reasons}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("rate", type=float)
    p.add_argument("seconds", type=float)
    p.add_argument("batch", type=int)
    p.add_argument("--key", default="")
    p.add_argument("--timeout_s", type=float, default=10.0)
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.url, a.rate, a.seconds, a.batch, a.key, a.timeout_s))))


if __name__ == "__main__":
    main()
