"""The limit: the model's own forward pass in-process at large batch sizes, no server, no HTTP.

    python -m loadtest.bench.limit --model_dir models/all-MiniLM-L6-v2 [--device cuda] [--seconds 5]

Prints one JSON object: sentences/s per batch size (tokenisation included, as the servers pay it),
and the best. Runs in its own process so its threads and memory do not linger in the benchmark.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from loadtest import texts
from loadtest.bench.model import Encoder


def measure(encoder: Encoder, batch_size: int, seconds: float) -> dict:
    rng = random.Random(batch_size)
    batches = [texts.batch(rng, batch_size) for _ in range(8)]
    encoder.encode_tensor(batches[0])  # shapes for this size warmed
    done, i, start = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or done == 0:
        encoder.encode_tensor(batches[i % len(batches)])
        done += batch_size
        i += 1
    if encoder.device.startswith("cuda"):
        encoder.torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return {"batch_size": batch_size, "sentences_per_s": done / elapsed, "passes": i}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch_sizes", default="64,256,512")
    p.add_argument("--seconds", type=float, default=5.0, help="per batch size")
    args = p.parse_args(argv)
    encoder = Encoder(args.model_dir, args.device)
    encoder.warm_up()
    rows = [measure(encoder, int(b), args.seconds) for b in args.batch_sizes.split(",")]
    best = max(rows, key=lambda r: r["sentences_per_s"])
    print(json.dumps({"device": encoder.device, "rows": rows, "best_sentences_per_s": best["sentences_per_s"],
                      "best_batch_size": best["batch_size"]}))


if __name__ == "__main__":
    main()
