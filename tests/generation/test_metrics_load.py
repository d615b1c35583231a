"""The generate predictor's load gauges under a streaming load past its capacity, seen as KEDA and GIE's
endpoint picker see them: the estimated wait, waiting and running requests, KV usage and the cache config,
the transformer's requests awaiting a predictor, and how long /metrics takes meanwhile (scraped every
50 ms, as an endpoint picker does). Figures are printed; the assertions are outcomes, not timings."""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import procs
from tests.generation.conftest import Pair

STREAMS = 32
MAX_REQUESTS = 128  # --max_queue_requests: every stream is admitted
# A small KV cache (24 blocks of 32 tokens) holds about 10 of these requests (a ~45-token chat prompt + 16 new
# tokens, 2 blocks each): the rest wait, and the load stays short on a shared CPU.
KV = ["--kv_blocks", "24", "--kv_page_size", "32", "--max_queue_requests", str(MAX_REQUESTS)]
PROMPT = "Name a colour."
GAUGES = {"wait": 'snapserve_estimated_wait_seconds{component="predictor"}',
          "waiting": "snapserve_num_requests_waiting", "running": "snapserve_num_requests_running",
          "kv": "snapserve_kv_cache_usage_perc"}
AWAITING = 'snapserve_requests_awaiting_predictor{component="transformer"}'


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture(scope="module")
def small_cache(gen_dir, tmp_path_factory) -> Pair:
    logs = tmp_path_factory.mktemp("metrics-load-logs")
    predictor, _ = procs.start_predictor(model_name="smol", model_dir=gen_dir, extra=KV, log_dir=logs, timeout=300)
    try:  # the last streams wait for the first ones: a first-token deadline that a busy CI box cannot miss
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_name="smol",
                                                 model_dir=gen_dir, log_dir=logs,
                                                 extra=["--request_timeout_ms", "300000"])
    except Exception:
        predictor.stop()
        raise
    yield Pair(predictor.url, transformer.url, "smol", gen_dir)
    transformer.stop()
    predictor.stop()


def stream(pair, i: int) -> str:
    """One streamed chat completion: its finish reason, or its status and error when refused."""
    body = {"model": pair.model_name, "messages": [{"role": "user", "content": f"{i}. {PROMPT}"}],
            "max_tokens": 16, "temperature": 0.8, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{pair.transformer_url}/openai/v1/chat/completions", json=body,
                      timeout=600) as response:
        if response.status_code != 200:
            return f"{response.status_code} {response.read()[:200]!r}"
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    return [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]


class Scraper(threading.Thread):
    """Reads a server's /metrics every ``every_s`` until stopped: each scrape's time and the samples."""

    def __init__(self, url: str, names: dict[str, str], every_s: float):
        super().__init__(daemon=True)
        self.url, self.names, self.every_s = url, names, every_s
        self.times: list[float] = []
        self.at: list[float] = []  # time.monotonic() of each scrape
        self.seen: dict[str, list[float]] = {key: [] for key in names}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                text = client.get(self.url).text
                self.times.append(time.perf_counter() - started)
                self.at.append(time.monotonic())
                for key, name in self.names.items():
                    self.seen[key].append(sample(text, name))
                self.stop.wait(self.every_s)

    def now(self) -> dict[str, float]:
        text = httpx.get(self.url, timeout=30).text
        return {key: sample(text, name) for key, name in self.names.items()}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def wait_for(predicate, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_load_gauges_rise_past_capacity_and_fall_back(small_cache):
    pair = small_cache
    predictor = Scraper(f"{pair.predictor_url}/metrics", GAUGES, every_s=0.05)
    transformer = Scraper(f"{pair.transformer_url}/metrics", {"awaiting": AWAITING}, every_s=0.2)
    assert wait_for(lambda: predictor.now()["running"] == 0 and predictor.now()["waiting"] == 0)
    text = httpx.get(f"{pair.predictor_url}/metrics", timeout=30).text
    config = re.search(r'^snapserve_cache_config_info\{block_size="(\d+)",num_gpu_blocks="(\d+)"\} 1\.0$', text, re.M)
    assert config, "no snapserve_cache_config_info{block_size, num_gpu_blocks} 1.0"
    block_size, blocks = int(config.group(1)), int(config.group(2))
    idle = predictor.now()
    predictor.start()
    transformer.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(STREAMS) as pool:
            reasons = list(pool.map(lambda i: stream(pair, i), range(STREAMS)))
    finally:
        loaded_s = time.monotonic() - started
        predictor.stop.set()
        transformer.stop.set()
        predictor.join()
        transformer.join()
    back = wait_for(lambda: (lambda now: now["waiting"] == 0 and now["running"] == 0 and now["wait"] == 0
                             and now["kv"] <= 0.05)(predictor.now()), 60)
    after = predictor.now()
    awaiting_after = sample(httpx.get(f"{pair.transformer_url}/metrics", timeout=30).text, AWAITING)
    seen, times = predictor.seen, predictor.times
    print(f"\n{STREAMS} streams in {loaded_s:.1f} s; cache {blocks} blocks of {block_size} tokens; idle {idle}")
    print(f"while loaded ({len(times)} scrapes): estimated wait max {max(seen['wait']):.2f} s, waiting max "
          f"{max(seen['waiting']):.0f}, running max {max(seen['running']):.0f}, KV usage max {max(seen['kv']):.3f} "
          f"(min {min(seen['kv']):.3f}), transformer awaiting max {max(transformer.seen['awaiting']):.0f}")
    peak = max(range(len(times)), key=lambda i: seen["wait"][i])
    print(f"estimated wait at its peak {seen['wait'][peak]:.1f} s, {started + loaded_s - predictor.at[peak]:.1f} s "
          "before the last stream ended")
    print(f"/metrics scrape: p50 {percentile(times, 50) * 1000:.1f} ms, p99 {percentile(times, 99) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms")
    print(f"after: {after}, transformer awaiting {awaiting_after}")
    assert reasons == ["length"] * STREAMS, [r for r in reasons if r != "length"][:3]
    assert (block_size, blocks) == (32, 24), "the cache config differs from the cache the flags asked for"
    assert max(seen["wait"]) > 0, "the estimated wait never rose under load"
    assert max(seen["waiting"]) > 0, "no request waited although the streams exceed the engine's capacity"
    assert max(seen["kv"]) > 0 and all(0 <= kv <= 1 for kv in seen["kv"])
    assert max(seen["running"]) <= min(MAX_REQUESTS, STREAMS)
    assert max(transformer.seen["awaiting"]) > 0, "no chat request was seen awaiting its first event"
    assert back, f"the gauges did not fall back after the load: {after}"
    assert awaiting_after == 0
    # a wide bound: an endpoint picker reads /metrics every 50 ms and treats older than 200 ms as saturated;
    # 2 s catches only a scrape that waits on the engine (a lock held for a step, a walk of every request)
    assert percentile(times, 99) < 2.0
