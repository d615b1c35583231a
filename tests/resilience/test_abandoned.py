"""Work nobody waits for is dropped (issue 14, item 1): 10 clients send 200 sentences each through the
transformer and hang up after 0.3 s. With --drop_abandoned (the default) at most the batch already
running is computed; with --drop_abandoned false, as servers usually behave, nearly all of it is."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from tests import procs

CLIENTS, SENTENCES, HANG_UP_S = 10, 200, 0.3


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def computed(url: str) -> float:
    return metric(url, "snapserve_batch_size_sum")


def settle(url: str) -> None:
    """Until the predictor has been idle for a second (its queue empty, no batch running)."""
    last, still = computed(url), 0
    deadline = time.monotonic() + 120
    while still < 4 and time.monotonic() < deadline:
        time.sleep(0.25)
        now = computed(url)
        still = still + 1 if now == last and metric(url, "snapserve_queue_depth") == 0 else 0
        last = now


def hang_up_run(drop: str, model_dir, tmp_path) -> dict:
    # A deadline far off, so admission takes all 2,000 sequences even where the box is slow (on a loaded CI
    # machine the 25 s default refused 6 of the 10 requests at once, which is right but not this test's point)
    extra = ["--drop_abandoned", drop, "--request_timeout_ms", "600000"]
    predictor, _ = procs.start_predictor(model_dir=model_dir, log_dir=tmp_path, extra=extra)
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_dir=model_dir,
                                                 log_dir=tmp_path, extra=extra)
        try:
            before = computed(predictor.url)
            texts = [f"sentence number {i} about nothing in particular" for i in range(SENTENCES)]

            hung_up, answered = [], []

            def client():
                try:
                    httpx.post(f"{transformer.url}/v1/models/snap:predict", json={"instances": texts},
                               timeout=HANG_UP_S)
                    answered.append(1)  # a fast machine may answer some in time
                except httpx.TimeoutException:
                    hung_up.append(1)  # the client is gone

            threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            at_hang_up = computed(predictor.url)
            settle(predictor.url)
            outcome = {o: metric(transformer.url, "snapserve_requests_total",
                                 f'{{component="transformer",outcome="{o}"}}') for o in ("ok", "cancelled")}
            deadline = time.monotonic() + 30
            while sum(outcome.values()) < CLIENTS and time.monotonic() < deadline:  # each request's end counted
                time.sleep(0.2)
                outcome = {o: metric(transformer.url, "snapserve_requests_total",
                                     f'{{component="transformer",outcome="{o}"}}') for o in outcome}
            return {
                "computed": computed(predictor.url) - before,
                "after_hang_up": computed(predictor.url) - at_hang_up,
                "dropped": metric(predictor.url, "snapserve_sequences_dropped_total", '{component="predictor"}')
                + metric(transformer.url, "snapserve_sequences_dropped_total", '{component="transformer"}'),
                "cancelled": outcome["cancelled"],
                "ok": outcome["ok"],
                "hung_up": len(hung_up),
                "answered": len(answered),
            }
        finally:
            transformer.stop()
    finally:
        predictor.stop()


@pytest.mark.parametrize("drop", ["true", "false"])
def test_clients_that_hang_up_leave_no_work_behind(drop, model_dir, tmp_path):
    got = hang_up_run(drop, model_dir, tmp_path)
    total = CLIENTS * SENTENCES
    print(f"\n--drop_abandoned {drop}: {CLIENTS} clients x {SENTENCES} sentences hung up after {HANG_UP_S} s: "
          f"{got['computed']:.0f}/{total} computed ({got['computed'] / total:.0%}; {got['after_hang_up']:.0f} after the "
          f"hang-ups), {got['dropped']:.0f} dropped, "
          f"{got['cancelled']:.0f} requests counted cancelled")
    if drop == "true":
        # what ran after the clients left: the batches already running then (what ran before depends on the
        # box's speed: with bf16 twice as much was computed in the first 0.3 s)
        assert got["after_hang_up"] <= 0.25 * total, got
        assert got["hung_up"] >= CLIENTS // 2, got  # the run shows something only if most gave up
        assert got["dropped"] > 0
        # every request ends once: answered, or cancelled when its client left. A client may time out just as
        # its answer was complete (CI: 10 hung up, 9 cancelled): the server counts that one ok
        late = got["ok"] - got["answered"]
        assert got["cancelled"] + got["ok"] == CLIENTS and late >= 0, got
        assert got["cancelled"] + late == got["hung_up"], got
    else:
        assert got["computed"] >= 0.9 * total  # the old behaviour, for the comparison


def test_grpc_callers_that_cancel_leave_no_work_behind(model_dir, tmp_path):
    """The same over gRPC to the predictor: 10 calls of 200 sequences, each cancelled by its client
    after 0.3 s; the cancelled calls' queued sequences are dropped, not computed."""
    import asyncio

    import grpc
    import numpy as np
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as stubs

    predictor, grpc_port = procs.start_predictor(model_dir=model_dir, log_dir=tmp_path)
    try:
        ids = np.tile(np.array([101, *([7592] * 30), 102], dtype=np.int64), (SENTENCES, 1))
        tensor = pb.ModelInferRequest.InferInputTensor(name="input_ids", datatype="INT64", shape=list(ids.shape))
        request = pb.ModelInferRequest(model_name="snap", inputs=[tensor], raw_input_contents=[ids.tobytes()])

        async def calls() -> list:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = stubs.GRPCInferenceServiceStub(channel)
                await stub.ModelInfer(request, timeout=60)  # warm: the throughput estimate exists

                async def one():  # no deadline (that would be refused at once): the client goes away
                    call = stub.ModelInfer(request)
                    await asyncio.sleep(HANG_UP_S)
                    call.cancel()
                    try:
                        await call
                        return grpc.StatusCode.OK
                    except asyncio.CancelledError:
                        return grpc.StatusCode.CANCELLED
                    except grpc.aio.AioRpcError as err:
                        return err.code()

                before = computed(predictor.url)
                codes = await asyncio.gather(*(one() for _ in range(CLIENTS)))
                return codes, before, computed(predictor.url)

        codes, before, at_cancel = asyncio.run(calls())
        settle(predictor.url)
        done = computed(predictor.url) - before
        after_cancel = computed(predictor.url) - at_cancel
        dropped = metric(predictor.url, "snapserve_sequences_dropped_total", '{component="predictor"}')
    finally:
        predictor.stop()
    total = CLIENTS * SENTENCES
    print(f"\ngRPC: {CLIENTS} calls x {SENTENCES} sequences cancelled after {HANG_UP_S} s: {done:.0f}/{total} computed "
          f"({after_cancel:.0f} after the cancels), {dropped:.0f} dropped; client codes {sorted({c.name for c in codes})}")
    assert codes.count(grpc.StatusCode.CANCELLED) >= CLIENTS // 2
    # what ran after the cancels: the batches already running then (what ran before them depends on the box's
    # speed: CI once computed 512 of the 2,000 in the first 0.3 s, bf16 computes about twice what fp32 does)
    assert after_cancel <= 0.25 * total and dropped > 0
