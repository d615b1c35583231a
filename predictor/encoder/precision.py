"""Reduced precision only where the CPU runs it natively and the outputs stay put.

bf16 on a CPU with AVX-512 BF16 or AMX runs a small encoder about twice as fast as fp32; without
those instructions it is emulated and slower. So ``--dtype auto`` on a CPU takes bf16 only when the
CPU has them and a start-up check (a few fixed sentences, bf16 against an fp32 forward of the same
weights) gives cosine >= ``MIN_COSINE``. The same check gates ONNX Runtime's int8.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from predictor.device import (  # noqa: F401  (the CPU's bf16 facts, shared with the generate task)
    BF16_FLAGS,
    KERNEL_CACHE_ENTRIES,
    KERNEL_CACHES,
    bound_kernel_caches,
    cpu_flags,
    cpu_has_bf16,
)

log = logging.getLogger("snapserve.predictor")

MIN_COSINE = 0.999
# Fixed: the check must mean the same on every start. Mixed lengths, scripts and punctuation.
SENTENCES = (
    "A man is playing a guitar.",
    "The new movie is awesome, I loved every minute of it!",
    "Kubernetes schedules pods onto nodes according to their resource requests and limits.",
    "오늘 날씨가 정말 좋네요.",
    "3.14159 is approximately pi; e is about 2.71828.",
    "no",
)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [n, d] matrices."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def check(reference: np.ndarray, candidate: np.ndarray, minimum: float = MIN_COSINE) -> tuple[bool, float]:
    """(passes, worst row cosine) of ``candidate`` against ``reference``."""
    if reference.shape != candidate.shape or not np.isfinite(candidate).all():
        return False, float("nan")
    worst = float(cosine(reference, candidate).min())
    return worst >= minimum, worst


def probe_sequences(model_dir: Path, info) -> list[np.ndarray]:
    """The fixed sentences as token ids (fixed ids when the snapshot has no tokenizer)."""
    if (Path(model_dir) / "tokenizer.json").is_file():
        from snapserve import tokenizer

        return tokenizer.TextEncoder(model_dir, info).encode(list(SENTENCES))
    vocab = max(info.vocab_size or 1000, 200)
    return [np.arange(100, 100 + n, dtype=np.int64) % vocab for n in (5, 12, 24, 7)]


def choose(run_reference: Callable[[], np.ndarray], run_candidate: Callable[[], np.ndarray], name: str,
           minimum: float | None = None) -> tuple[bool, float]:
    """Run both forwards on the probe, log the verdict; (keep the candidate, cosine)."""
    minimum = MIN_COSINE if minimum is None else minimum
    ok, worst = check(run_reference(), run_candidate(), minimum)
    log.info("precision check: %s against fp32 on %d fixed sentences: cosine %.6f (need >= %g): %s",
             name, len(SENTENCES), worst, minimum, "kept" if ok else "refused, fp32 it is")
    return ok, worst


def torch_cpu(engine) -> None:
    """``--dtype auto`` for a TorchEngine on a CPU: its fp32 model becomes bf16 when the CPU has bf16
    instructions and the probe passes; the fp32 copy is dropped either way it goes."""
    import copy

    import torch

    native, why = cpu_has_bf16()
    if not native:
        log.info("dtype auto on CPU: float32 (%s)", why)
        return
    prepared = engine.prepare(probe_sequences(engine.model_dir, engine.info))
    fp32 = engine.model
    reference = engine.execute(prepared)
    engine.model = engine.forward = copy.deepcopy(fp32).to(torch.bfloat16).eval()
    ok, _ = choose(lambda: reference, lambda: engine.execute(prepared), f"bfloat16 ({why})")
    if ok:
        engine.dtype = torch.bfloat16
    else:
        engine.model = engine.forward = fp32
