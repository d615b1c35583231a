"""Continuous batching under concurrency, and cancellation, seen from outside: the predictor's metrics."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

RUNNING = "snapserve_num_requests_running"


def stream_reply(pair, max_tokens: int, content: str) -> dict:
    body = {"model": pair.model_name, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0.8, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{pair.transformer_url}/openai/v1/chat/completions", json=body,
                      timeout=600) as response:
        assert response.status_code == 200, response.read()
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    return {"finish_reason": reasons[-1], "usage": chunks[-1]["usage"]}


def test_sixteen_concurrent_streams_share_the_running_batch(pair):
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            seen.append(pair.metric(RUNNING))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: stream_reply(pair, 12, f"Write a short poem about the number {i}."),
                                    range(16)))
    finally:
        done.set()
        watcher.join()
    assert [r["finish_reason"] for r in replies] == ["length"] * 16
    assert all(r["usage"]["completion_tokens"] == 12 for r in replies)
    assert max(seen) > 1, f"never more than one request running at once: {sorted(set(seen))}"
    assert pair.metric("snapserve_time_to_first_token_seconds_count") >= 16
    assert pair.metric("snapserve_inter_token_latency_seconds_count") >= 16 * 11


def wait_for(predicate, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_closing_a_stream_cancels_it_in_the_engine(pair):
    assert wait_for(lambda: pair.metric(RUNNING) == 0)
    aborted = pair.metric("snapserve_request_success_total", '{finished_reason="abort"}')
    generated = pair.metric("snapserve_generation_tokens_total")
    body = {"model": pair.model_name, "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 1000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{pair.transformer_url}/openai/v1/chat/completions", json=body,
                      timeout=600) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        contents = 0
        for line in lines:
            if '"content"' in line:
                contents += 1
            if contents >= 4:
                break
        assert pair.metric(RUNNING) == 1
    # the client went away after a few tokens: the transformer closed its predictor stream
    assert wait_for(lambda: pair.metric(RUNNING) == 0, 60), "the cancelled request kept running"
    assert pair.metric("snapserve_request_success_total", '{finished_reason="abort"}') == aborted + 1
    assert pair.metric("snapserve_kv_cache_usage_perc") < 0.05
    assert pair.metric("snapserve_generation_tokens_total") - generated < 500  # far short of its max_tokens
    reply = httpx.post(f"{pair.transformer_url}/openai/v1/chat/completions", timeout=300, json={
        "model": pair.model_name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1


def test_a_non_streamed_request_is_cancelled_when_its_client_leaves(pair):
    assert wait_for(lambda: pair.metric(RUNNING) == 0)
    url = f"{pair.predictor_url}/v2/models/{pair.model_name}/generate"
    body = {"input_ids": [1, 504, 3575], "parameters": {"max_tokens": 1000, "ignore_eos": True}}
    try:
        httpx.post(url, json=body, timeout=3)
    except httpx.TimeoutException:
        pass
    assert wait_for(lambda: pair.metric(RUNNING) == 0, 60), "the request outlived its client"
