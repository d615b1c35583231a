"""API keys, rate limits and body limits on a real transformer started with the flags
(--api_keys_file, --rate_limit_rps 5, --rate_limit_burst 5, --max_body_bytes 65536)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.hardening.conftest import KEYS
from transformer.guard import key_id

ROUTES = [("/v1/models/snap:predict", {"instances": ["hello"]}),
          ("/v2/models/snap/infer", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}),
          ("/openai/v1/embeddings", {"model": "snap", "input": "hello"})]


def post(url: str, key: str | None, path: str, payload=None, content=None, retry: bool = True):
    """POST with a key; waits out a 429 (the rate limit is shared by the tests of one key).
    ``content``: bytes, or a callable giving a fresh (streamed) body for each attempt."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    if content is not None:
        headers["content-type"] = "application/json"
    for _ in range(5):
        body = content() if callable(content) else content
        r = httpx.post(url + path, json=payload, content=body, headers=headers, timeout=30)
        if r.status_code != 429 or not retry:
            return r
        time.sleep(float(r.headers["retry-after"]))
    return r


@pytest.mark.parametrize(("path", "payload"), ROUTES)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", f"Basic {KEYS[0]}", "Bearer", f"bearer {KEYS[0]}x"])
def test_no_valid_key_is_401(guarded, path, payload, auth):
    headers = {"authorization": auth} if auth else {}
    r = httpx.post(guarded.url + path, json=payload, headers=headers, timeout=30)
    assert r.status_code == 401, r.text
    kind = r.json()["error"]["type"] if path.startswith("/openai/") else r.json()["error_type"]  # OpenAI's shape there
    assert kind == "unauthorized" and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/", "/metrics", "/v2/health/live", "/v2/health/ready", "/v2/models/snap/ready",
                                  "/v1/models/snap"])
def test_probes_and_metrics_stay_open_and_unlimited(guarded, path):
    for _ in range(8):  # more than the burst: probes never spend tokens
        assert httpx.get(guarded.url + path, timeout=10).status_code == 200


@pytest.mark.parametrize(("path", "payload"), ROUTES)
def test_a_valid_key_is_served(guarded, path, payload):
    r = post(guarded.url, KEYS[1], path, payload)
    assert r.status_code == 200, r.text


def test_the_scheme_is_case_insensitive(guarded):
    r = httpx.post(guarded.url + ROUTES[0][0], json=ROUTES[0][1], headers={"authorization": f"bearer {KEYS[1]}"})
    assert r.status_code in (200, 429)


def test_bodies_over_the_limit_are_413_on_content_length_and_chunked(guarded):
    big = b'{"instances": ["' + b"a" * 70_000 + b'"]}'
    r = post(guarded.url, KEYS[1], ROUTES[0][0], content=big)
    assert r.status_code == 413 and r.json()["error_type"] == "payload_too_large"

    def chunks():
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    r = post(guarded.url, KEYS[1], ROUTES[0][0], content=chunks)
    assert r.status_code == 413 and r.json()["error_type"] == "payload_too_large"


def test_model_repository_cannot_unload_the_model(guarded):
    r = post(guarded.url, KEYS[1], "/v2/repository/models/snap/unload")
    assert r.status_code == 404
    assert httpx.get(guarded.url + "/v2/models/snap/ready").status_code == 200


def test_rate_limit_per_key_429_with_retry_after_then_served_again(guarded):
    time.sleep(1.5)  # the other key's bucket refills from the tests above
    path, payload = ROUTES[0]

    async def at_once():  # together, so a slow box cannot refill the bucket between them
        async with httpx.AsyncClient(timeout=60, headers={"authorization": f"Bearer {KEYS[0]}"}) as http:
            return await asyncio.gather(*(http.post(guarded.url + path, json=payload) for _ in range(15)))

    answers = asyncio.run(at_once())
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) >= 5 and set(statuses) == {200, 429}, statuses  # the burst, then refusals
    limited = [r for r in answers if r.status_code == 429]
    assert limited, statuses
    for r in limited:
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error_type"] == "rate_limited"
    assert post(guarded.url, KEYS[1], path, payload, retry=False).status_code == 200  # per key, not global
    time.sleep(int(limited[-1].headers["retry-after"]))
    assert post(guarded.url, KEYS[0], path, payload, retry=False).status_code == 200


def test_keys_are_never_logged_only_their_ids(guarded):
    log = guarded.log.read_text(errors="replace")
    for key in KEYS:
        assert key not in log
    assert key_id(KEYS[0]) in log and key_id(KEYS[1]) in log  # "api keys: 2 loaded (ids ...)"
