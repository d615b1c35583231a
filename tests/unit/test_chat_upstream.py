"""The chat path's resilience in-process, without servers: the shared Upstream (retry while no
predictor answers, within the deadline), the generate stream's client (retried until its first event,
an error after it), and the ChatModel's admission (the one rule: queue, per-key caps, deadlines).

The predictor here is an httpx MockTransport that answers like the real one (SSE events): plumbing
only; tests/resilience/test_chat_restart.py runs the real servers."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from snapserve.errors import ServingError
from transformer.chat.client import GenerateClient
from transformer.upstream import Upstream


def run(coro):
    return asyncio.run(coro)


async def never_ready() -> bool:
    return False


def test_upstream_retries_while_unavailable_and_forwards_what_is_left_of_the_deadline():
    upstream, seen = Upstream("127.0.0.1:1", False, 30.0, 1.0, never_ready), []

    async def attempt(forward, timeout):
        seen.append((int(forward["x-request-timeout-ms"]), timeout))
        if len(seen) < 3:
            raise ServingError("unavailable", "connection refused", retry_after=1)
        return "answer"

    assert run(upstream.retrying(attempt, {"x-request-id": "r1", "cookie": "no"}, time.monotonic() + 5)) == "answer"
    print(f"\nretries: {seen}")
    assert len(seen) == 3 and all(ms <= 5000 and t <= 5 for ms, t in seen)
    assert upstream.down_since is None and upstream.last_ok > 0


def test_upstream_gives_503_at_the_deadline_and_never_retries_a_refusal():
    upstream, tries = Upstream("127.0.0.1:1", False, 30.0, 1.0, never_ready), []

    async def down(forward, timeout):
        tries.append(1)
        raise ServingError("unavailable", "connection refused", retry_after=1)

    with pytest.raises(ServingError) as exc:
        run(upstream.retrying(down, {}, time.monotonic() + 0.3))
    assert exc.value.error_type == "unavailable" and len(tries) >= 2

    async def busy(forward, timeout):
        tries.append(2)
        raise ServingError("overloaded", "full", retry_after=1)

    with pytest.raises(ServingError) as exc:
        run(upstream.retrying(busy, {}, time.monotonic() + 5))
    assert exc.value.error_type == "overloaded" and tries.count(2) == 1
    with pytest.raises(ServingError) as exc:
        run(upstream.retrying(busy, {}, time.monotonic() - 1))  # a spent deadline: no try at all
    assert exc.value.error_type == "timeout" and tries.count(2) == 1


def test_upstream_readiness_turns_after_the_grace_and_back():
    state = {"ok": False}

    async def probe():
        return state["ok"]

    upstream = Upstream("127.0.0.1:1", False, 30.0, 1.0, probe)
    assert run(upstream.unready_reason(0.0)).startswith("no predictor answered")
    state["ok"], upstream.last_probe = True, 0.0
    assert run(upstream.unready_reason(0.0)) is None


def sse(*events) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


def client_with(handler) -> GenerateClient:
    client = GenerateClient("predictor:8080", "smol", 30.0)
    client.http = httpx.AsyncClient(base_url=client.upstream.base_url, transport=httpx.MockTransport(handler))
    return client


async def collect(client, deadline_s: float = 5.0) -> list[dict]:
    return [e async for e in client.stream([1, 2, 3], {"max_tokens": 2}, {"x-request-id": "r"},
                                           time.monotonic() + deadline_s)]


def test_a_stream_is_retried_until_its_first_event():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("x-request-timeout-ms"))
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        if len(calls) == 2:
            return httpx.Response(503, json={"error": "server is draining", "error_type": "unavailable"})
        if len(calls) == 3:  # a predictor whose engine stopped before this request's first token
            return httpx.Response(200, content=sse({"error": "shutting down", "error_type": "unavailable"}))
        return httpx.Response(200, content=sse({"output_ids": [5], "finish_reason": None},
                                               {"output_ids": [6], "finish_reason": "length"}))

    events = run(collect(client_with(handler)))
    print(f"\ntries: {len(calls)}, forwarded deadlines (ms): {calls}")
    assert [e["output_ids"] for e in events] == [[5], [6]] and len(calls) == 4
    assert all(c is not None and int(c) <= 5000 for c in calls)


def test_after_the_first_event_a_failure_is_an_error_not_a_retry():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(200, content=sse({"output_ids": [5], "finish_reason": None},
                                               {"error": "generation failed", "error_type": "internal"}))

    with pytest.raises(ServingError) as exc:
        run(collect(client_with(handler)))
    assert exc.value.error_type == "upstream" and len(calls) == 1


@pytest.mark.parametrize("status, kind", [(429, "overloaded"), (422, "unprocessable"), (500, "upstream")])
def test_a_refusal_keeps_its_status(status, kind):
    def handler(request):
        return httpx.Response(status, json={"error": "no", "error_type": kind}, headers={"retry-after": "2"})

    with pytest.raises(ServingError) as exc:
        run(collect(client_with(handler)))
    assert exc.value.error_type == kind


def test_no_predictor_is_unavailable_at_the_deadline():
    def handler(request):
        raise httpx.ConnectError("refused")

    started = time.monotonic()
    with pytest.raises(ServingError) as exc:
        run(collect(client_with(handler), deadline_s=0.5))
    assert exc.value.error_type == "unavailable"  # a 503 for the client, never a 502
    assert time.monotonic() - started < 5  # its deadline (0.5 s), with a wide margin


@pytest.fixture
def chat_model():
    from tests.generation.conftest import GEN_DIR
    from transformer import config
    from transformer.chat.model import ChatModel

    if not (GEN_DIR / "tokenizer.json").is_file():
        pytest.fail(f"generative model missing at {GEN_DIR}: run `bash ci/setup.sh`")
    settings = config.load(["--model_name", "smol", "--model_dir", str(GEN_DIR), "--predictor_host", "127.0.0.1:1",
                            "--max_queue_requests", "4", "--max_queue_requests_per_key", "2"])
    return ChatModel(settings)


def key(name: str) -> dict:
    return {"x-snapserve-tenant": name}


def test_chat_admission_is_the_one_rule(chat_model):
    chat_model.refuse_if_full(1, {})  # empty: taken
    chat_model.held, chat_model.held_by_tenant["a"] = 2, 2
    with pytest.raises(ServingError) as exc:  # key a holds its 2
        chat_model.refuse_if_full(1, key("a"))
    assert exc.value.status == 429 and "API key" in exc.value.reason and exc.value.retry_after >= 1
    chat_model.refuse_if_full(1, key("b"))  # another key still gets in
    chat_model.held = 4
    with pytest.raises(ServingError) as exc:  # the queue is full
        chat_model.refuse_if_full(1, key("b"))
    assert exc.value.status == 429 and "queue full" in exc.value.reason


def test_chat_requests_are_held_while_streaming_and_released_after(chat_model):
    def handler(request):
        return httpx.Response(200, content=sse({"output_ids": [28], "finish_reason": None},
                                               {"output_ids": [2], "finish_reason": "stop"}))

    chat_model.client = client_with(handler)

    async def go():
        pieces = chat_model.pieces([1, 2, 3], {"max_tokens": 2}, [], key("a"))
        first = await anext(pieces)
        held_during = (chat_model.held, dict(chat_model.held_by_tenant))
        rest = [p async for p in pieces]
        return first, rest, held_during

    first, rest, held_during = run(go())
    assert held_during == (1, {"a": 1})
    assert (rest or [first])[-1].finish_reason == "stop"
    assert chat_model.held == 0 and not chat_model.held_by_tenant
