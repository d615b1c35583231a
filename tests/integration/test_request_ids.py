"""Request ids and trace context: echoed on every answer, forwarded to the predictor, a v2 id kept."""

from __future__ import annotations

import concurrent.futures
import re
import time

import httpx


def test_every_answer_echoes_the_client_request_id_or_a_new_one(servers):
    for url in (servers.transformer_url, servers.predictor_url):
        r = httpx.post(f"{url}/v1/models/snap:predict", json={"instances": ["hi"]}, headers={"x-request-id": "rid-echo"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "rid-echo"
        bad = httpx.post(f"{url}/v1/models/snap:predict", json={"instances": []})
        assert bad.status_code == 400 and re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])
        probe = httpx.get(f"{url}/v2/health/ready")
        assert probe.headers["x-request-id"]


def test_a_v2_answer_carries_the_request_id_on_both_tiers(servers):
    body = {"id": "my-v2-id", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}
    for url in (servers.transformer_url, servers.predictor_url):
        r = httpx.post(f"{url}/v2/models/snap/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == "my-v2-id"


def wait_for_line(server, pattern: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, server.log.read_text(errors="replace"))
        if found:
            return found.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in {server.log}:\n{server.tail()}")


def test_the_request_id_reaches_the_predictor(servers):
    r = httpx.post(f"{servers.transformer_url}/v1/models/snap:predict", json={"instances": ["alone"]},
                   headers={"x-request-id": "rid-forwarded-1", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    assert r.status_code == 200
    wait_for_line(servers.transformer, r"predictor call rid-forwarded-1: 1 sequences for client requests rid-forwarded-1")
    wait_for_line(servers.predictor, r"/v2/models/snap/infer\" 200 [\d.]+ ms id=rid-forwarded-1")


def test_a_coalesced_call_gets_its_own_id_and_lists_its_clients(servers):
    def send(i):
        return httpx.post(f"{servers.transformer_url}/v1/models/snap:predict", json={"instances": ["x " * 100] * 8},
                          headers={"x-request-id": f"rid-co-{i}"}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, range(32)))
    assert all(a.status_code == 200 for a in answers)
    line = wait_for_line(servers.transformer, r"predictor call \w+: \d+ sequences for client requests rid-co-\d+,[\w,-]+")
    call_id = line.split()[2].rstrip(":")
    assert not call_id.startswith("rid-co-")
    wait_for_line(servers.predictor, rf"/v2/models/snap/infer\" 200 [\d.]+ ms id={call_id}")
