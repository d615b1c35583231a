"""``snapserve_requests_awaiting_predictor`` in process: the requests a transformer holds with no predictor
answer yet (what wakes a predictor scaled to zero) rise while held and fall back to where they were after
success, error, cancellation and a spent deadline; chat through ChatModel.pieces against an httpx
MockTransport predictor (as tests/unit/test_chat_upstream.py), embeddings through the pipeline with a
stand-in predictor call. Plumbing only."""

from __future__ import annotations

import asyncio
import time
import types

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from snapserve import metadata, tokenizer
from snapserve.errors import ServingError
from transformer.chat.client import GenerateClient


def awaiting() -> float:
    return REGISTRY.get_sample_value("snapserve_requests_awaiting_predictor", {"component": "transformer"}) or 0.0


def sse(*events) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


DONE = sse({"output_ids": [28], "finish_reason": None}, {"output_ids": [2], "finish_reason": "stop"})


@pytest.fixture
def chat_model():
    from tests.generation.conftest import GEN_DIR
    from transformer import config
    from transformer.chat.model import ChatModel

    if not (GEN_DIR / "tokenizer.json").is_file():
        pytest.fail(f"generative model missing at {GEN_DIR}: run `bash ci/setup.sh`")
    settings = config.load(["--model_name", "smol", "--model_dir", str(GEN_DIR), "--predictor_host", "127.0.0.1:1"])
    model = ChatModel(settings)

    def predictor(handler):
        model.client = GenerateClient("predictor:8080", "smol", 30.0)
        model.client.http = httpx.AsyncClient(base_url=model.client.upstream.base_url,
                                              transport=httpx.MockTransport(handler))

    model.predictor = predictor
    return model


def stream(model, deadline_ms: int | None = None):
    headers = {"x-request-timeout-ms": str(deadline_ms)} if deadline_ms else {}
    return model.pieces([1, 2, 3], {"max_tokens": 2}, [], headers)


def test_a_chat_request_awaits_until_its_first_event(chat_model):
    gate = asyncio.Event()

    async def handler(request):
        await gate.wait()
        return httpx.Response(200, content=DONE)

    chat_model.predictor(handler)
    before = awaiting()

    async def go():
        pieces = stream(chat_model)
        first = asyncio.create_task(anext(pieces))
        await asyncio.sleep(0.05)
        held = awaiting()
        gate.set()
        await first
        streaming = awaiting(), chat_model.held  # the first event came: no longer awaiting, still held
        rest = [p async for p in pieces]
        return held, *streaming, rest

    held, streaming, held_streaming, rest = asyncio.run(go())
    print(f"\nawaiting: {before} -> {held} while no event -> {streaming} once streaming -> {awaiting()} after")
    assert held == before + 1 and streaming == before and held_streaming == 1
    assert rest[-1].finish_reason == "stop"
    assert awaiting() == before and chat_model.held == 0


@pytest.mark.parametrize("answer", ["refused", "failed_after_first_event", "ended_without_reason"])
def test_a_failed_chat_request_stops_awaiting(chat_model, answer):
    def handler(request):
        if answer == "refused":
            return httpx.Response(500, json={"error": "boom", "error_type": "internal"})
        if answer == "failed_after_first_event":
            return httpx.Response(200, content=sse({"output_ids": [5], "finish_reason": None},
                                                   {"error": "generation failed", "error_type": "internal"}))
        return httpx.Response(200, content=sse({"output_ids": [5], "finish_reason": None}))

    chat_model.predictor(handler)
    before = awaiting()

    async def go():
        return [p async for p in stream(chat_model)]

    with pytest.raises(ServingError):
        asyncio.run(go())
    assert awaiting() == before and chat_model.held == 0


def test_a_chat_request_retried_while_no_predictor_awaits_until_cancelled_or_its_deadline(chat_model):
    tries = []

    def handler(request):
        tries.append(1)
        raise httpx.ConnectError("refused")  # no predictor (scaled to zero, or restarting)

    chat_model.predictor(handler)
    before = awaiting()

    async def cancelled():
        task = asyncio.create_task(anext(stream(chat_model)))
        await asyncio.sleep(0.3)
        held = awaiting()
        task.cancel()  # the client hung up
        with pytest.raises(asyncio.CancelledError):
            await task
        return held

    held = asyncio.run(cancelled())
    assert held == before + 1 and len(tries) >= 2, "held and retried while no predictor answers"
    assert awaiting() == before and chat_model.held == 0

    async def timed_out():
        return [p async for p in stream(chat_model, deadline_ms=300)]

    started = time.monotonic()
    with pytest.raises(ServingError) as exc:
        asyncio.run(timed_out())
    print(f"\nretried {len(tries)} times; unavailable after {time.monotonic() - started:.2f} s")
    assert exc.value.error_type == "unavailable"
    assert awaiting() == before and chat_model.held == 0


def test_a_chat_stream_closed_by_its_client_leaves_nothing_awaiting(chat_model):
    chat_model.predictor(lambda request: httpx.Response(200, content=DONE))
    before = awaiting()

    async def go():
        pieces = stream(chat_model)
        await anext(pieces)
        await pieces.aclose()

    asyncio.run(go())
    assert awaiting() == before and chat_model.held == 0


# -- embeddings: from the pipeline's submit until its rows arrive --------------------------------------
SETTINGS = {"model_name": "snap", "max_texts": 8, "max_text_chars": 300, "request_timeout_ms": 5000,
            "drop_abandoned": True, "max_queue_sequences": 64, "max_queue_sequences_per_key": 0,
            "coalesce_max_sequences": 2, "coalesce_delay_ms": 0.0, "predictor_max_in_flight": 1,
            "coalesce_max_call_ms": 0.0}


def pipeline(model_dir, call, **settings):
    from transformer.pipeline import Pipeline

    info = metadata.read(model_dir, "auto", 32)
    return Pipeline(types.SimpleNamespace(**{**SETTINGS, **settings}), info, tokenizer.TextEncoder(model_dir, info),
                    call)


@pytest.mark.parametrize("outcome", ["ok", "error", "cancelled", "deadline"])
def test_embedding_requests_await_until_their_rows_arrive(model_dir, outcome):
    async def go():
        gate = asyncio.Event()

        async def call(work, _instance=None):
            await gate.wait()
            if outcome == "error":
                raise ServingError("upstream", "predictor failed with status 500")
            return [(np.zeros(2, np.float32), "LABEL_0")] * len(work)

        pipe = pipeline(model_dir, call)
        before = awaiting()
        headers = {"x-request-timeout-ms": "300"} if outcome == "deadline" else {}
        tasks = [asyncio.create_task(pipe.embed([f"text {i}"], headers)) for i in range(3)]
        await asyncio.sleep(0.1)
        held = awaiting()  # two in the one call in flight, one queued behind it
        if outcome == "cancelled":
            for task in tasks:
                task.cancel()
        elif outcome == "deadline":
            await asyncio.sleep(0.4)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return before, held, results

    before, held, results = asyncio.run(go())
    print(f"\n{outcome}: awaiting {before} -> {held} -> {awaiting()}; {[type(r).__name__ for r in results]}")
    assert held == before + 3
    assert awaiting() == before
    if outcome == "ok":
        assert all(isinstance(r, tuple) for r in results)
    else:
        assert all(isinstance(r, BaseException) for r in results)
