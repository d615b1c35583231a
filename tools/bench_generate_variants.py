"""The generation engine in-process, variant against variant, rounds interleaved (issue 22's profile side).

    python -m tools.bench_generate_variants --model_dir models/SmolLM2-135M-Instruct \\
        [--variants fp32-varlen,fp32-library,bf16-varlen] [--clients 1,32] [--tokens 64] [--rounds 2]
        [--prefix 512] [--stall 1500]

Each variant is its own ``GenerationEngine`` (dtype, attention, prefix sharing, Linear kernels) in this one process; the
variants take turns, level by level, ``--rounds`` times, so a busy box slows them alike. Per level:
tokens/s, TTFT p50/p99 and ITL p50 of greedy requests that ignore EOS, and the process's CPU time per
token. ``--prefix N``: TTFT of 8 requests one after another that share an N-token system prompt, prefix
sharing on and off. ``--stall N``: the longest gap between two tokens of 4 running streams while an
N-token prompt is prefilled beside them (the engine takes at most ``--generate_max_batch_tokens`` a step).
The servers' side against llama.cpp is ``python -m loadtest.bench --generate``; the device check's rows are
``tools.bench_generate``. Prints a JSON last line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from pathlib import Path

VARIANTS = {  # name: (dtype, attention, prefix sharing, Linear layers)
    "fp32-varlen": ("float32", "varlen", True, "packed"),
    "fp32-library": ("float32", "library", True, "packed"),
    "bf16-varlen": ("bfloat16", "varlen", True, "packed"),
    "fp32-noshare": ("float32", "varlen", False, "packed"),
    "fp32-mkl": ("float32", "varlen", True, "library"),  # F.linear instead of oneDNN's packed weights
    "bf16-mkl": ("bfloat16", "varlen", True, "library"),
}


def engine_for(model_dir: Path, variant: str, threads: int):
    from predictor.generate.engine import GenerationEngine
    from predictor.generate.settings import GenerateSettings
    from snapserve import metadata

    dtype, attn, share, linear = VARIANTS[variant]
    settings = GenerateSettings(attention=attn, prefix_sharing=share, linear=linear)
    engine = GenerationEngine(model_dir, metadata.read(model_dir), settings, "cpu", dtype, threads)
    engine.start()
    return engine


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def stream(engine, prompt: list[int], tokens: int) -> dict:
    from predictor.generate.engine import Sampling

    started = time.perf_counter()
    stamps = []
    async for delta in engine.generate(prompt, Sampling(max_tokens=tokens, temperature=0, ignore_eos=True)):
        stamps += [time.perf_counter()] * len(delta.token_ids)
    gaps = [b - a for a, b in itertools.pairwise(stamps) if b > a]
    return {"ttft": stamps[0] - started, "itl": statistics.median(gaps) if gaps else 0.0,
            "max_gap": max(gaps, default=0.0), "tokens": len(stamps)}


async def level(engine, clients: int, tokens: int) -> dict:
    prompts = [[1, *range(200 + i, 240 + i)] for i in range(clients)]  # 41 tokens, distinct
    cpu, wall = time.process_time(), time.perf_counter()
    runs = await asyncio.gather(*(stream(engine, p, tokens) for p in prompts))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = sum(r["tokens"] for r in runs)
    ttft = [r["ttft"] for r in runs]
    return {"clients": clients, "tok_s": round(done / wall, 1), "ttft_p50_ms": round(pct(ttft, 0.5) * 1e3),
            "ttft_p99_ms": round(pct(ttft, 0.99) * 1e3),
            "itl_p50_ms": round(statistics.median(r["itl"] for r in runs) * 1e3, 1),
            "cpu_ms_per_token": round(cpu / done * 1e3, 2)}


async def shared_prefix(engine, prefix: int) -> dict:
    system = [1, *[300 + i % 1000 for i in range(prefix)]]
    ttft = [(await stream(engine, [*system, 5000 + i, 5001 + i, 5002], 1))["ttft"] for i in range(8)]
    return {"prefix_tokens": prefix, "ttft_first_ms": round(ttft[0] * 1e3),
            "ttft_p50_rest_ms": round(statistics.median(ttft[1:]) * 1e3)}


async def stall(engine, long_prompt: int) -> dict:
    async def late():
        await asyncio.sleep(1.0)
        return await stream(engine, [1, *[400 + i % 900 for i in range(long_prompt)]], 1)

    runs = await asyncio.gather(*(stream(engine, [1, 2000 + i, 2001, 2002], 48) for i in range(4)), late())
    return {"long_prompt_tokens": long_prompt, "its_ttft_ms": round(runs[-1]["ttft"] * 1e3),
            "streams_itl_p50_ms": round(statistics.median(r["itl"] for r in runs[:-1]) * 1e3, 1),
            "streams_longest_gap_ms": round(max(r["max_gap"] for r in runs[:-1]) * 1e3, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", type=Path, default=Path("models/SmolLM2-135M-Instruct"))
    parser.add_argument("--variants", default="fp32-varlen,fp32-library")
    parser.add_argument("--clients", default="1,32")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the engine's choice)")
    parser.add_argument("--prefix", type=int, default=0)
    parser.add_argument("--stall", type=int, default=0)
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    engines = {v: engine_for(args.model_dir, v, args.threads) for v in variants}
    results: list[dict] = []

    async def run() -> None:
        for engine in engines.values():  # warm: the first steps of an engine allocate
            await level(engine, 1, 4)
        for rnd in range(1, args.rounds + 1):
            for clients in (int(c) for c in args.clients.split(",")):
                for name, engine in (engines.items() if rnd % 2 else reversed(engines.items())):
                    row = {"round": rnd, "variant": name, **await level(engine, clients, args.tokens)}
                    print(json.dumps(row), flush=True)
                    results.append(row)
        if args.prefix:
            for name in ("fp32-varlen", "fp32-noshare"):
                engine = engines.get(name) or engines.setdefault(name, engine_for(args.model_dir, name, args.threads))
                row = {"variant": name, **await shared_prefix(engine, args.prefix)}
                print(json.dumps(row), flush=True)
                results.append(row)
        if args.stall:
            row = {"variant": variants[0], **await stall(engines[variants[0]], args.stall)}
            print(json.dumps(row), flush=True)
            results.append(row)
        for engine in engines.values():
            await engine.stop(5)

    asyncio.run(run())
    print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
