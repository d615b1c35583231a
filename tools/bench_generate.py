"""The generation engine in-process (no servers, no kserve): the device check's generation rows.

    python -m tools.bench_generate [--model_dir DIR] [--device cuda|cpu|auto] [--levels 1,32,128] [--quick]

At each level, that many requests run at once in a closed loop (each client sends the next request as its
last one ends) for ``--duration`` seconds, greedy with ``ignore_eos``, ``--max_tokens`` new tokens each,
through ``GenerationEngine`` exactly as the predictor drives it (transformers' continuous batching). Rows:
tokens/s, TTFT p50 (the first delta), ITL p50 (gaps between deltas) and, on CUDA, peak GPU memory
(``torch.cuda.max_memory_allocated``, per level).

The model is ``--model_dir`` when it holds a causal LM; otherwise a randomly initialised Qwen2-shaped model
(Qwen2.5-0.5B's shapes, about 0.5B parameters; ``--quick``: a tiny one), labelled so: its tokens measure
speed only, never quality. Prints one line per level, then the rows as JSON on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a generation snapshot carried to the device machine, else the default chat model of a dev checkout
DEFAULT_MODELS = (ROOT / ".carry" / "model-generate", ROOT / "models" / "SmolLM2-135M-Instruct")
# Qwen2.5-0.5B's shapes: 494M parameters with the tied embeddings
QWEN2_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 4096,
             "tie_word_embeddings": True}
QWEN2_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512,
              "tie_word_embeddings": True}
PROMPT_TOKENS = 32


def causal_lm(model_dir: Path | None) -> bool:
    if model_dir is None or not (model_dir / "config.json").is_file():
        return False
    archs = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    return any(a.endswith("ForCausalLM") for a in archs) and any(model_dir.glob("*.safetensors"))


def random_qwen2(folder: Path, shapes: dict, dtype) -> Path:
    """A Qwen2-shaped model with random weights, saved as a snapshot the engine loads (speed only)."""
    import torch
    import transformers

    config = transformers.Qwen2Config(**shapes, architectures=["Qwen2ForCausalLM"], bos_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    return folder


async def level(engine, sampling_cls, clients: int, duration: float, max_tokens: int, vocab: int) -> dict:
    import torch

    ttft, itl, tokens, requests = [], [], 0, 0
    start = time.perf_counter()
    stop = start + duration

    async def client(i: int) -> None:
        nonlocal tokens, requests
        n = i
        while True:
            prompt = [(7 * n + 13 * k) % (vocab - 2) + 2 for k in range(PROMPT_TOKENS)]
            sent = time.perf_counter()
            last = None
            async for delta in engine.generate(prompt, sampling_cls(max_tokens=max_tokens, temperature=0,
                                                                    ignore_eos=True)):
                now = time.perf_counter()
                if delta.token_ids:
                    if last is None:
                        ttft.append(now - sent)
                    else:
                        itl.append(now - last)
                    last = now
                tokens += len(delta.token_ids)
            requests += 1
            n += clients
            if time.perf_counter() >= stop:
                return

    cuda = torch.cuda.is_available() and engine.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - start
    ttft.sort()
    itl.sort()

    def p50(xs):
        return round(xs[len(xs) // 2] * 1e3, 2) if xs else None

    return {"clients": clients, "requests": requests, "tokens": tokens, "wall_s": round(wall, 2),
            "tok_per_s": round(tokens / wall, 1), "ttft_p50_ms": p50(ttft), "itl_p50_ms": p50(itl),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench_generate", description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", type=Path, default=None,
                   help="a causal LM snapshot (default: .carry/model-generate, else models/SmolLM2-135M-Instruct, "
                        "when there); anything else, or --quick: a random Qwen2-shaped model")
    p.add_argument("--random", action="store_true", help="the random Qwen2-shaped model even if a snapshot is there")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--dtype", default="auto", help="the engine's dtype (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--levels", default=None, help="concurrent requests per level (default 1,32,128; quick 1,4)")
    p.add_argument("--max_tokens", type=int, default=None, help="new tokens per request (default 64; quick 8)")
    p.add_argument("--duration", type=float, default=None, help="seconds per level (default 5; quick 1)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a CPU dry run")
    a = p.parse_args(argv)
    levels = [int(x) for x in (a.levels or ("1,4" if a.quick else "1,32,128")).split(",")]
    max_tokens = a.max_tokens or (8 if a.quick else 64)
    duration = a.duration if a.duration is not None else (1.0 if a.quick else 5.0)

    import torch

    from predictor import device as devices
    from predictor.generate.engine import GenerationEngine, Sampling
    from predictor.generate.settings import GenerateSettings
    from snapserve import metadata

    device = devices.resolve_device(a.device)
    dtype = devices.resolve_dtype(a.dtype, device)
    model_dir = a.model_dir or (None if a.quick else next((d for d in DEFAULT_MODELS if causal_lm(d)), None))
    scratch = None
    if a.random or not causal_lm(model_dir):
        scratch = tempfile.TemporaryDirectory(prefix="bench-generate-")
        shapes = QWEN2_TINY if a.quick else QWEN2_05B
        model_dir = random_qwen2(Path(scratch.name), shapes, dtype)
        label = f"random Qwen2-shaped {'tiny' if a.quick else '0.5B'} (speed only)"
    else:
        label = model_dir.name
    info = metadata.read(model_dir, "generate")
    # the KV cache holds every level's requests at once: the most clients x (prompt + new tokens), in pages
    page = 64 if device.type == "cpu" else 256
    need = max(levels) * (PROMPT_TOKENS + max_tokens + page)
    settings = GenerateSettings(kv_blocks=(need + page - 1) // page if device.type == "cpu" else 0,
                                max_queue_requests=max(256, max(levels)))
    started = time.perf_counter()
    # random weights: no quality gate to pass (--dtype auto's bf16 gate on a CPU), the dtype as resolved
    engine = GenerationEngine(model_dir, info, settings, device=str(device),
                              dtype=a.dtype if scratch is None else str(dtype).removeprefix("torch."))
    engine.start()
    params = sum(t.numel() for t in engine.model.parameters())
    print(f"generation in-process on {device.type} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'})"
          f": {label}, {params / 1e6:.1f}M parameters, {str(engine.dtype).removeprefix('torch.')}, "
          f"{max_tokens} new tokens, ready in {time.perf_counter() - started:.1f} s", flush=True)
    rows = []
    try:
        asyncio.run(level(engine, Sampling, 1, 0, 2, info.vocab_size or 512))  # warm-up
        for clients in levels:
            r = {"model": label, **asyncio.run(level(engine, Sampling, clients, duration, max_tokens,
                                                     engine.vocab))}
            rows.append(r)
            mem = f"  peak {r['peak_gpu_mib']} MiB" if r["peak_gpu_mib"] is not None else ""
            print(f"  generate c={clients:<4} {r['tok_per_s']:9.1f} tok/s  TTFT p50 {r['ttft_p50_ms']} ms  "
                  f"ITL p50 {r['itl_p50_ms']} ms  reqs {r['requests']}{mem}", flush=True)
    finally:
        asyncio.run(engine.stop(30))
        if scratch:
            scratch.cleanup()
    print(json.dumps({"device": device.type, "model": label, "dtype": str(engine.dtype).removeprefix("torch."),
                      "max_tokens": max_tokens, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
