"""``--dtype auto`` for the generate task on a CPU: bf16 where the CPU runs it natively, it is faster here, and
its greedy tokens and perplexity stay close to fp32's; fp32 otherwise.

A CPU with AVX-512 BF16 or AMX multiplies bf16 at twice fp32's rate and reads half the bytes: on the 2-core
AMD EPYC (avx512_bf16, no AMX) the engine did 3.4x the tokens/s of fp32 at 32 running requests. Without those
instructions bf16 is emulated and slower, so an AVX2-only CPU keeps fp32, as the encoder does
(``predictor/encoder/precision.py``). The choice is measured at start, once: a 1-token and a 32-token forward
pass of each (the decode step and a prefill chunk; best of two interleaved rounds, through the Linear kernels
that will serve, oneDNN's packed ones by default), then the quality gate of ``quantize.measure`` against
the fp32 weights (greedy agreement on fixed prompts, perplexity of a fixed text), with the thresholds
``--generate_gate_min_agreement`` and ``--generate_gate_max_perplexity_ratio``. bf16's greedy tokens are not fp32's
token for token; ``--dtype float32`` keeps them exactly ``generate``'s.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch

from predictor import device as devices

log = logging.getLogger("snapserve.predictor")

SLOWER_AT_ONE_TOKEN = 1.10  # bf16 may be this much slower on the 1-token step if it wins the 32-token one


@torch.inference_mode()
def forward_ms(model: torch.nn.Module, tokens: int, repeats: int = 3) -> float:
    """The fastest of ``repeats`` forward passes over ``tokens`` tokens (one warm-up first), in ms."""
    ids = torch.arange(100, 100 + tokens, device=next(model.parameters()).device).unsqueeze(0)
    model(input_ids=ids)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model(input_ids=ids)
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def faster(reference: torch.nn.Module, candidate: torch.nn.Module, rounds: int = 2) -> tuple[bool, str]:
    """Whether ``candidate`` wins the 32-token pass and is not much slower on the 1-token one, and the figures:
    the best of ``rounds`` interleaved rounds each, so a moment of load on a shared CPU does not decide it."""
    times = {"fp32": [float("inf")] * 2, "bf16": [float("inf")] * 2}
    for _ in range(rounds):
        for name, m in (("fp32", reference), ("bf16", candidate)):
            times[name] = [min(times[name][0], forward_ms(m, 1)), min(times[name][1], forward_ms(m, 32))]
    (ref1, ref32), (got1, got32) = times["fp32"], times["bf16"]
    figures = f"1 token {ref1:.1f} -> {got1:.1f} ms, 32 tokens {ref32:.1f} -> {got32:.1f} ms"
    return got32 < ref32 and got1 <= ref1 * SLOWER_AT_ONE_TOKEN, figures


def choose_cpu(model: torch.nn.Module, settings, tokenizer_dir: Path, cpu_bf16: bool = True,
               prepare=None) -> torch.nn.Module:
    """``model`` (fp32) or its bf16 copy, per the rule above; the log says which and why, with the figures.
    ``prepare`` (e.g. ``packed.apply``) is applied to each before they are timed: the race times the kernels
    that will serve."""
    native, why = devices.cpu_has_bf16()
    if not (cpu_bf16 and native):
        log.info("generate: fp32 (%s)", why if cpu_bf16 else "--cpu_bf16 false")
        return model
    devices.bound_kernel_caches()  # before the first bf16 matmul
    candidate = copy.deepcopy(model).to(torch.bfloat16).eval()
    for m in (model, candidate) if prepare else ():
        prepare(m)
    wins, figures = faster(model, candidate)
    if not wins:
        log.info("generate: fp32, bf16 is not faster here (%s; %s)", figures, why)
        return model
    from transformers import AutoTokenizer

    from predictor.generate import quantize

    try:
        gate = quantize.measure(model, candidate, AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True))
    except (OSError, ValueError) as exc:  # no usable tokenizer in the snapshot: the gate cannot be measured
        log.warning("generate: fp32, bf16's quality gate cannot be measured here (%s)", exc)
        return model
    refusals = gate.refusals(settings.gate_min_agreement, settings.gate_max_perplexity_ratio)
    if refusals:
        log.warning("generate: fp32, bf16 refused by the quality gate (%s): %s", "; ".join(refusals), gate.figures())
        return model
    log.info("generate: bf16 (%s; %s; %s)", why, figures, gate.figures())
    return candidate
