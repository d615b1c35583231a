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


def test_a_grpc_deadline_is_the_requests_deadline_and_errors_keep_their_meaning(servers):
    """gRPC's own deadline reaches the model (as x-request-timeout-ms): an expired one is
    DEADLINE_EXCEEDED without a forward pass; a refusal is RESOURCE_EXHAUSTED, bad input
    INVALID_ARGUMENT (not INTERNAL), on the predictor and through the transformer."""
    import asyncio

    import grpc
    import numpy as np
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as stubs

    def ids_request(count: int, length: int = 4) -> pb.ModelInferRequest:
        row = np.array([101, *([7592] * (length - 2)), 102], dtype=np.int64)
        ids = np.tile(row, (count, 1))
        tensor = pb.ModelInferRequest.InferInputTensor(name="input_ids", datatype="INT64", shape=list(ids.shape))
        return pb.ModelInferRequest(model_name="snap", inputs=[tensor], raw_input_contents=[ids.tobytes()])

    def text_request(texts: list) -> pb.ModelInferRequest:
        tensor = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[len(texts)])
        tensor.contents.bytes_contents.extend(t.encode() for t in texts)
        return pb.ModelInferRequest(model_name="snap", inputs=[tensor])

    async def call(target: str, request, timeout: float | None = None, metadata=()):
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                await stubs.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=timeout, metadata=metadata)
                return grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as err:
                return err.code(), err.details()

    async def scenario():
        got = {"ok": await call(servers.predictor_grpc, ids_request(2), timeout=30)}
        before = computed(servers.predictor_url)
        # the server sees ~0 ms left: dropped before batching (the client may see its own deadline first)
        got["expired"] = await call(servers.predictor_grpc, ids_request(1), metadata=(("x-request-timeout-ms", "0.001"),))
        got["after_expired"] = computed(servers.predictor_url) - before
        got["bad"] = await call(servers.predictor_grpc, text_request([]), timeout=30)
        got["bad_transformer"] = await call(servers.transformer_grpc, text_request([]), timeout=30)
        got["transformer_ok"] = await call(servers.transformer_grpc, text_request(["hello"]), timeout=30)
        big = asyncio.ensure_future(call(servers.predictor_grpc, ids_request(3000, 96), timeout=120))
        deadline = time.monotonic() + 30
        while queue_depth(servers.predictor_url) < 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        got["hopeless"] = await call(servers.predictor_grpc, ids_request(1), timeout=0.1)
        await big
        return got

    got = asyncio.run(scenario())
    print(f"\ngRPC: {got}")
    assert got["ok"][0] == grpc.StatusCode.OK and got["transformer_ok"][0] == grpc.StatusCode.OK
    assert got["expired"][0] == grpc.StatusCode.DEADLINE_EXCEEDED and got["after_expired"] == 0
    assert got["bad"][0] == got["bad_transformer"][0] == grpc.StatusCode.INVALID_ARGUMENT, got
    # the 0.1 s deadline is shorter than the queue's estimated wait: refused at once, not run out
    assert got["hopeless"][0] == grpc.StatusCode.RESOURCE_EXHAUSTED, got
    assert "estimated wait" in got["hopeless"][1]
