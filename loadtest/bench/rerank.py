"""The rerank row of the benchmark: pairs/s with 32 clients, each sending 1 query x 16 documents.

    python -m loadtest.bench.rerank [--model_dir DIR] [--clients 32] [--documents 16] [--duration 20]

Two targets in this process tree, the same snapshot and load:

- **B, plain KServe**: a ``kserve.Model`` as KServe's docs write one (``python -m
  loadtest.bench.rerank --serve_plain``): ``predict`` tokenises the request's pairs and runs one
  forward pass for them, one request after another (no batching across requests);
- **snapserve**: predictor + transformer, ``POST /v1/rerank`` (pairs of concurrent requests share
  forward passes).

Without ``--model_dir`` a MiniLM-L6-sized cross-encoder is built from the default model's encoder
with a fresh one-label head (the shape of ``cross-encoder/ms-marco-MiniLM-L-6-v2``: its speed is
representative, its scores mean nothing). Prints one row per target and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from loadtest import texts
from loadtest.bench.procs import REPO_ROOT, Server, free_port, python

DEFAULT_MODEL = REPO_ROOT / "models" / "all-MiniLM-L6-v2"


def build_cross_encoder(out: Path, encoder_dir: Path = DEFAULT_MODEL) -> Path:
    """The default model's encoder under a fresh one-label head (speed only, never quality)."""
    import shutil

    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(encoder_dir, num_labels=1)
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(encoder_dir / name, out / name)
    return out


# -- B: plain KServe ------------------------------------------------------------------------------
def serve_plain(model_dir: str, port: int, grpc_port: int) -> None:
    import kserve
    import torch
    from kserve.errors import InvalidInput
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    class PlainReranker(kserve.Model):
        def load(self) -> bool:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
            self.ready = True
            return True

        def predict(self, payload, headers=None):
            query, documents = payload.get("query"), payload.get("documents")
            if not isinstance(query, str) or not isinstance(documents, list):
                raise InvalidInput('expected {"query": "...", "documents": ["...", ...]}')
            enc = self.tokenizer([query] * len(documents), documents, truncation="only_second", max_length=512,
                                 padding=True, return_tensors="pt")
            with torch.inference_mode():
                scores = torch.sigmoid(self.model(**enc).logits[:, 0]).tolist()
            return {"results": sorted(({"index": i, "relevance_score": s} for i, s in enumerate(scores)),
                                      key=lambda r: -r["relevance_score"])}

    model = PlainReranker("rr")
    model.load()
    kserve.ModelServer(http_port=port, grpc_port=grpc_port, workers=1, enable_docs_url=False).start([model])


# -- load -----------------------------------------------------------------------------------------
async def load(url: str, clients: int, documents: int, duration: float, warmup: float) -> dict:
    import aiohttp

    rng = random.Random(0)
    bodies = [json.dumps({"query": texts.single(rng), "documents": texts.batch(rng, documents)}).encode()
              for _ in range(64)]
    t0 = time.time() + warmup
    t1 = t0 + duration
    done, errors, lat = 0, 0, []

    async def client(i: int, session) -> None:
        nonlocal done, errors
        n = i
        while time.time() < t1:
            started = time.time()
            try:
                async with session.post(url, data=bodies[n % len(bodies)],
                                        headers={"content-type": "application/json"}) as r:
                    body = await r.json(content_type=None)
                    ok = r.status == 200 and len(body["results"]) == documents
            except Exception:  # noqa: BLE001 - counted as an error, the run goes on
                ok = False
            end = time.time()
            n += clients
            if t0 <= end <= t1:  # completions in the window (a request may outlast it under load)
                done += ok
                errors += not ok
                lat.append(end - started)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    lat.sort()
    return {"req_per_s": done / duration, "pairs_per_s": done * documents / duration, "errors": errors,
            "p50_ms": lat[len(lat) // 2] * 1e3 if lat else None, "p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else None}


def ready(url: str, body: dict, timeout_s: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if httpx.post(url, json=body, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


def run(a: argparse.Namespace) -> list[dict]:
    rows = []
    probe = {"query": "ready?", "documents": ["yes"]}
    logs = Path(tempfile.mkdtemp(prefix="bench-rerank-"))
    model_dir = str(a.model_dir)
    targets = []
    p_port = free_port()
    targets.append(("B plain KServe (one request at a time)", [
        Server("plain", python("-m", "loadtest.bench.rerank", "--serve_plain", "--model_dir", model_dir,
                               "--port", str(p_port)), logs)], f"http://127.0.0.1:{p_port}/v1/models/rr:predict"))
    pred, trans = free_port(), free_port()
    targets.append(("snapserve /v1/rerank", [
        Server("predictor", python("-m", "predictor", "--model_name", "rr", "--model_dir", model_dir,
                                   "--http_port", str(pred), "--grpc_port", str(free_port()), "--device", a.device),
               logs),
        Server("transformer", python("-m", "transformer", "--model_name", "rr", "--model_dir", model_dir,
                                     "--predictor_host", f"127.0.0.1:{pred}", "--http_port", str(trans),
                                     "--grpc_port", str(free_port())), logs)], f"http://127.0.0.1:{trans}/v1/rerank"))
    for label, servers, url in targets:
        try:
            for server in servers:
                server.start()
            ready(url, probe)
            r = asyncio.run(load(url, a.clients, a.documents, a.duration, a.warmup))
            r["target"] = label
            rows.append(r)
            print(f"{label:<42} {r['pairs_per_s']:9.1f} pairs/s {r['req_per_s']:7.1f} req/s  p50 {r['p50_ms'] or 0:7.1f} ms "
                  f"p99 {r['p99_ms'] or 0:7.1f} ms  errors {r['errors']}", flush=True)
        finally:
            for server in reversed(servers):
                server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench.rerank", description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", type=Path, help="a cross-encoder snapshot (default: MiniLM-L6 under a new head)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--documents", type=int, default=16)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "out" / "bench" / "rerank.json")
    p.add_argument("--serve_plain", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=8002, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_plain:
        serve_plain(str(a.model_dir), a.port, free_port())
        return 0
    with tempfile.TemporaryDirectory(prefix="cross-encoder-") as tmp:
        if a.model_dir is None:
            a.model_dir = build_cross_encoder(Path(tmp))
        print(f"rerank bench: {a.clients} clients x 1 query x {a.documents} documents, {a.duration:.0f} s each, "
              f"snapshot {a.model_dir}", flush=True)
        rows = run(a)
    base, ours = rows[0]["pairs_per_s"], rows[-1]["pairs_per_s"]
    if base:
        print(f"ratio snapserve / plain KServe: {ours / base:.2f}x pairs/s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"clients": a.clients, "documents": a.documents, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
