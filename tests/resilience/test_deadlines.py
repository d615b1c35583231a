"""Deadlines (issue 14, item 2): past its deadline a request is dropped before it is batched and gets 504;
a deadline shorter than the queue's estimated wait gets 429 at once. On the predictor alone, which also
takes the deadline the transformer forwards."""

from __future__ import annotations

import re
import threading
import time

import httpx



def computed(url: str) -> float:
    found = re.search(r"^snapserve_batch_size_sum (\S+)$", httpx.get(f"{url}/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def queue_depth(url: str) -> float:
    found = re.search(r"^snapserve_queue_depth (\S+)$", httpx.get(f"{url}/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_expired_deadline_is_a_504_without_a_forward_and_a_hopeless_one_a_fast_429(servers):
    url = f"{servers.predictor_url}/v1/models/snap:predict"
    assert httpx.post(url, json={"instances": ["warm up the throughput estimate"] * 8}).status_code == 200
    before = computed(servers.predictor_url)
    r = httpx.post(url, json={"instances": ["too late"]}, headers={"x-request-timeout-ms": "0.001"})
    assert r.status_code == 504, r.text
    assert r.json()["error_type"] == "timeout"
    time.sleep(0.5)
    assert computed(servers.predictor_url) == before  # dropped before any forward pass

    big: dict = {}

    def flood():
        texts = [f"a long sentence number {i} " + "with many words " * 6 for i in range(2000)]
        big["status"] = httpx.post(url, json={"instances": texts}, timeout=120).status_code

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while queue_depth(servers.predictor_url) < 200 and time.monotonic() < deadline:
            time.sleep(0.02)  # until the big request is queued and batches are running
        started = time.perf_counter()
        r = httpx.post(url, json={"instances": ["in a hurry"]}, headers={"x-request-timeout-ms": "100"})
        took = time.perf_counter() - started
    finally:
        thread.join(120)
    print(f"\nhopeless deadline: {r.status_code} in {took * 1000:.0f} ms: {r.text}")
    assert r.status_code == 429, r.text
    assert "estimated wait" in r.json()["error"] and r.headers["retry-after"]
    assert big["status"] in (200, 504)  # a slow machine may not finish 2,000 long texts in 30 s


def test_the_transformer_forwards_what_is_left_of_the_deadline(servers):
    r = httpx.post(f"{servers.transformer_url}/v1/models/snap:predict", json={"instances": ["x"]},
                   headers={"x-request-timeout-ms": "0.001"})
    assert r.status_code == 504 and r.json()["error_type"] == "timeout", r.text
    r = httpx.post(f"{servers.transformer_url}/v1/models/snap:predict", json={"instances": ["x"]},
                   headers={"request-timeout": "5s"})
    assert r.status_code == 200
    bad = httpx.post(f"{servers.transformer_url}/v1/models/snap:predict", json={"instances": ["x"]},
                     headers={"x-request-timeout-ms": "soon"})
    assert bad.status_code == 400
