"""An open-loop flood for tests/resilience/test_fairness.py, in a process of its own:

    python -m tests.resilience.flood URL KEY|- RATE SECONDS BATCH

sends BATCH sentences a request at RATE requests/s for SECONDS (with ``Authorization: Bearer KEY``
unless KEY is ``-``) and prints the answers' statuses as JSON ({"200": n, "429": n, "timeout": n})."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx


async def main(url: str, key: str, rate: float, seconds: float, batch: int) -> dict:
    counts: dict[str, int] = {}
    body = {"instances": [f"flooding the queue with sentence {i}" for i in range(batch)]}
    headers = {"authorization": f"Bearer {key}"} if key != "-" else {}
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(timeout=10, headers=headers, limits=limits) as http:
        async def one():
            try:
                status = str((await http.post(url, json=body)).status_code)
            except httpx.HTTPError:
                status = "timeout"
            counts[status] = counts.get(status, 0) + 1

        sent, stop = [], time.monotonic() + seconds
        while time.monotonic() < stop:
            sent.append(asyncio.ensure_future(one()))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*sent)
    return counts


if __name__ == "__main__":
    url, key, rate, seconds, batch = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(url, key, float(rate), float(seconds), int(batch)))))
