"""The embedding servers' load gauges under a concurrent load, as KEDA reads them: the estimated wait of the
predictor's device batcher (and the transformer's coalescer) rises above 0 and falls back, and the
transformer's requests awaiting a predictor answer rise and fall back to 0. Figures are printed."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import httpx

WAIT = 'snapserve_estimated_wait_seconds{{component="{}"}}'
AWAITING = 'snapserve_requests_awaiting_predictor{component="transformer"}'
REQUESTS, TEXTS = 96, 8


def sample(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def scrape(url: str, names: list[str], seen: dict[str, list[float]], stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            text = client.get(url).text
            for name in names:
                seen[name].append(sample(text, name) or 0.0)
            stop.wait(0.02)


def test_estimated_wait_rises_under_a_concurrent_load_and_falls_back(servers):
    texts = [f"sentence {i}: " + " ".join(["the quick brown fox jumps over the lazy dog"] * 6) for i in range(TEXTS)]
    predictor_text = httpx.get(f"{servers.predictor_url}/metrics").text
    transformer_text = httpx.get(f"{servers.transformer_url}/metrics").text
    idle = (sample(predictor_text, WAIT.format("predictor")), sample(transformer_text, WAIT.format("transformer")),
            sample(transformer_text, AWAITING))
    seen = {name: [] for name in (WAIT.format("predictor"), WAIT.format("transformer"), AWAITING)}
    stop = threading.Event()
    watchers = [threading.Thread(target=scrape, args=(f"{servers.predictor_url}/metrics", [WAIT.format("predictor")],
                                                      seen, stop)),
                threading.Thread(target=scrape, args=(f"{servers.transformer_url}/metrics",
                                                      [WAIT.format("transformer"), AWAITING], seen, stop))]

    async def load() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            async def call(i):
                r = await client.post(f"{servers.transformer_url}/v1/models/{servers.model_name}:predict",
                                      json={"instances": texts})
                return r.status_code
            return await asyncio.gather(*(call(i) for i in range(REQUESTS)))

    for watcher in watchers:
        watcher.start()
    started = time.monotonic()
    try:
        statuses = asyncio.run(load())
    finally:
        took = time.monotonic() - started
        stop.set()
        for watcher in watchers:
            watcher.join()
    predictor_text = httpx.get(f"{servers.predictor_url}/metrics").text
    transformer_text = httpx.get(f"{servers.transformer_url}/metrics").text
    after = (sample(predictor_text, WAIT.format("predictor")), sample(transformer_text, WAIT.format("transformer")),
             sample(transformer_text, AWAITING))
    print(f"\n{REQUESTS} requests x {TEXTS} texts in {took:.1f} s, statuses {sorted(set(statuses))}; "
          f"(predictor wait, transformer wait, awaiting) idle {idle}, after {after}")
    print("max while loaded: " + ", ".join(f"{name} {max(values):.3f} ({len(values)} scrapes)"
                                           for name, values in seen.items()))
    assert statuses.count(200) >= REQUESTS // 2, statuses  # an overloaded queue may refuse some (429): fine
    assert idle[0] == 0 and idle[2] == 0
    assert max(seen[WAIT.format("predictor")]) > 0, "the predictor's estimated wait never rose under load"
    assert max(seen[AWAITING]) > 0, "no request was seen awaiting the predictor"
    assert after == (0.0, 0.0, 0.0)
