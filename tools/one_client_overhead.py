"""What one client's single sentence spends in the predictor outside the forward pass, in-process.

    python -m tools.one_client_overhead --model_dir models/all-MiniLM-L6-v2 [--engine onnx] [--requests 300]

Loads the embedding predictor's kserve Model as the server does (no HTTP), sends one sentence at a time
through ``predict`` and stamps, with perf_counter: the request entering the device batcher (``submit``),
the forward starting and ending (the engine's ``execute``, on its instance thread; padding, ``prepare``,
counts as overhead), the rows back from
the batcher, and ``predict`` returning its response. Prints the median of each span over the requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

TEXT = "A man is playing a guitar on a sunny afternoon."


def measure(model, requests: int, hops: int = 1) -> dict[str, float]:
    """``hops=2``: the batcher wired as before issue 24 (prepare on its own thread, then execute)."""
    batcher, engine, stamps = model.batcher, model.engine, {}
    submit, execute = batcher.submit, engine.execute

    async def timed_submit(*args, **kwargs):
        stamps["enter"] = time.perf_counter()
        rows = await submit(*args, **kwargs)
        stamps["rows"] = time.perf_counter()
        return rows

    def timed_execute(prepared, instance):
        stamps["forward"] = time.perf_counter()
        try:
            return execute(prepared, instance)
        finally:
            stamps["forward_end"] = time.perf_counter()

    call = batcher._call

    async def timed_call(*args):
        rows = await call(*args)
        stamps["loop_back"] = time.perf_counter()
        return rows

    batcher.submit, engine.execute, batcher._call = timed_submit, timed_execute, timed_call
    if hops == 2:
        batcher._prepare, batcher._execute = engine.prepare, timed_execute
    spans: dict[str, list[float]] = {"to_batcher": [], "to_forward": [], "forward": [], "from_forward": [], "back_on_loop": [],
                                     "to_response": [],
                                     "predict": []}

    async def run():
        for i in range(requests + 20):
            started = time.perf_counter()
            await model.predict({"instances": [TEXT]}, {})
            done = time.perf_counter()
            if i < 20:  # the first few warm the path
                continue
            spans["to_batcher"].append(stamps["enter"] - started)
            spans["to_forward"].append(stamps["forward"] - stamps["enter"])
            spans["forward"].append(stamps["forward_end"] - stamps["forward"])
            spans["from_forward"].append(stamps["rows"] - stamps["forward_end"])
            spans["back_on_loop"].append(stamps["loop_back"] - stamps["forward_end"])
            spans["to_response"].append(done - stamps["rows"])
            spans["predict"].append(done - started)

    asyncio.run(run())
    return {name: statistics.median(values) * 1e3 for name, values in spans.items()}


def main(argv=None) -> None:
    from predictor import config
    from predictor.encoder.model import SnapshotModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_dir", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--engine", default="onnx", choices=["torch", "onnx", "auto"])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--hops", type=int, default=1, choices=[1, 2], help="2: prepare on the batcher's own thread")
    args = ap.parse_args(argv)
    settings = config.load(["--model_dir", args.model_dir, "--engine", args.engine, "--device", "cpu",
                            "--max_batch_size", "16", "--max_batch_tokens", "256", "--warmup", "false"])
    model = SnapshotModel(settings)
    model.load()
    figures = measure(model, args.requests, args.hops)
    figures["overhead"] = figures["to_forward"] + figures["from_forward"] + figures["to_response"]
    print(json.dumps({"engine": model.engine.describe()["engine"], "hops": args.hops, "requests": args.requests,
                      **{k: round(v, 3) for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
