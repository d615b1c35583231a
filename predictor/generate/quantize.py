"""Opt-in int8 generation (``--generate_weights int8``), behind a quality gate measured at start.

The LM head and the attention projections get int8 weights with one scale per output channel. The LM head is
tied to the input embeddings in the default model (SmolLM2: 49,152 x 576, 113 MB in fp32, the largest single
read of a decode step), so it is untied first: the embedding lookup keeps its float table, the head reads a
quarter of the bytes. The MLP keeps its float weights (``dynamic_layer`` has the measured reasons).

On CPU the kernel is PyTorch's own ``quantize_dynamic`` (fbgemm's int8 GEMM, VNNI where the CPU has it): it
also quantises each call's input, with one scale over the call, so it is int8 x int8, and a request's tokens
may depend on what shares its batch (they are deterministic for the same batch). torchao 0.18's
``Int8WeightOnlyConfig`` (weights only) and ATen's ``_weight_int8pack_mm`` were measured too, and were slower
than fp32 on CPU in eager mode; on other devices torchao's weight-only is used when torchao is installed.

The gate, run once at start against the model as loaded (the reference), on fixed inputs:

- **agreement**: greedy continuations (``AGREE_TOKENS`` each) of ``PROMPTS``; a prompt's share is the
  tokens it has identical to the reference's before the first divergence, over ``AGREE_TOKENS``; the
  gate's figure is the mean share (exact-match prompts are logged beside it);
- **perplexity** of ``TEXT`` under both models, and their ratio.

int8 is refused, and the engine keeps the reference weights, when the agreement is under
``--generate_gate_min_agreement`` or the ratio is over ``--generate_gate_max_perplexity_ratio``; the log
says which, with the figures.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

import torch

log = logging.getLogger("snapserve.predictor")

AGREE_TOKENS = 32
PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle gear works.",
    "What is the capital of France, and why is it famous?",
    "Give me three tips for learning to cook.",
    "Summarise the plot of a detective novel in a few sentences.",
    "How do plants turn sunlight into food?",
    "Write a polite email asking a colleague for a meeting.",
    "List some uses of a paper clip.",
)
TEXT = (
    "The river rose slowly through the night, and by morning the lower fields were under water. The farmers "
    "had seen floods before, so they moved the animals to the hill behind the village and carried the seed "
    "grain into the church, the only building with a stone floor high enough to stay dry. Children watched "
    "from the bridge as branches and fence posts drifted past. By the afternoon the rain had stopped, the sky "
    "cleared, and the water began to fall. It left a layer of brown mud across the roads and gardens, and it "
    "took the whole village a week to clean the houses, dig out the ditches and mend the broken fences. "
    "The old miller said that the mud would make the soil richer, and the next summer the harvest was the "
    "best that anyone could remember."
)


@dataclasses.dataclass(frozen=True)
class Gate:
    agreement: float  # mean share of tokens identical to the reference's before the first divergence
    exact: int  # prompts whose AGREE_TOKENS tokens all match
    prompts: int
    perplexity_reference: float
    perplexity_int8: float
    seconds: float

    @property
    def perplexity_ratio(self) -> float:
        return self.perplexity_int8 / self.perplexity_reference

    def refusals(self, min_agreement: float, max_ratio: float) -> list[str]:
        out = []
        if self.agreement < min_agreement:
            out.append(f"agreement {self.agreement:.3f} < --generate_gate_min_agreement {min_agreement:g}")
        if not self.perplexity_ratio <= max_ratio:  # NaN refuses too
            out.append(f"perplexity ratio {self.perplexity_ratio:.4f} > --generate_gate_max_perplexity_ratio "
                       f"{max_ratio:g}")
        return out

    def figures(self) -> str:
        return (f"greedy agreement {self.agreement:.3f} ({self.exact}/{self.prompts} prompts identical over "
                f"{AGREE_TOKENS} tokens), perplexity {self.perplexity_reference:.3f} -> {self.perplexity_int8:.3f} "
                f"(ratio {self.perplexity_ratio:.4f}); gate took {self.seconds:.1f} s")


def untie_head(model: torch.nn.Module) -> None:
    """Give the LM head a weight of its own, so that quantising it leaves the embedding table alone."""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and embed is not None and head.weight is embed.weight:
        head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False  # a later tie_weights() must not tie them again


def int8_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """fbgemm int8 weights per output channel, each call's input quantised to int8 with one scale (CPU
    only), for the Linear layers ``dynamic_layer`` picks; the others keep their float weights."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and dynamic_layer(name)]
    return quantize_dynamic(model, dict.fromkeys(names, per_channel_dynamic_qconfig), dtype=torch.qint8, inplace=True)


def dynamic_layer(name: str) -> bool:
    """The layers fbgemm's int8 keeps quality on: the LM head and the attention projections. The MLP's
    inputs carry outlier activations that one int8 scale per call cannot hold; measured on SmolLM2 (perplexity
    of ``TEXT``, int8 / fp32): everything 2.30, the MLP's down projections alone 1.58, its gate and up 1.08,
    the attention projections 0.98, the LM head 1.03, the LM head and attention together 1.035."""
    return name == "lm_head" or name.endswith("lm_head") or ".self_attn." in name


def int8_torchao(model: torch.nn.Module) -> torch.nn.Module:
    """torchao's int8 weight-only (per output channel), for devices fbgemm does not run on."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig())
    return model


def kernel_for(device: torch.device):
    """The int8 kernel for ``device``, or None with the reason when it has none here."""
    if device.type == "cpu":
        if "fbgemm" not in torch.backends.quantized.supported_engines:
            return None, "this torch build has no fbgemm"
        return int8_dynamic, ""
    try:
        import torchao  # noqa: F401
    except ImportError:
        return None, f"int8 on {device.type} needs torchao (pip install torchao), which is not installed"
    return int8_torchao, ""


def quantised(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with int8 weights (the model itself is left as it is)."""
    weight = next(model.parameters())
    kernel, why = kernel_for(weight.device)
    if kernel is None:
        raise RuntimeError(why)
    if kernel is int8_dynamic and weight.dtype != torch.float32:
        raise RuntimeError(f"int8 on CPU quantises float32 weights, these are {_dtype(model)} (--dtype float32)")
    candidate = copy.deepcopy(model)
    untie_head(candidate)
    if kernel is int8_dynamic:
        torch.backends.quantized.engine = "fbgemm"
    return kernel(candidate).eval()


def prompt_ids(tokenizer) -> list[list[int]]:
    out = []
    for text in PROMPTS:
        if getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                     tokenize=False)
        else:
            rendered = text
        out.append(tokenizer(rendered, add_special_tokens=False).input_ids)
    if not all(out):
        raise ValueError("the snapshot's tokenizer gives no token ids for the gate's prompts")
    return out


@torch.inference_mode()
def greedy(model: torch.nn.Module, prompts: list[list[int]], tokens: int, pad_id: int) -> list[list[int]]:
    """``tokens`` greedy tokens after each prompt (one left-padded batch; no early stop)."""
    device = next(model.parameters()).device
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=tokens,
                         min_new_tokens=tokens, pad_token_id=pad_id, eos_token_id=None)
    return out[:, width:].tolist()


@torch.inference_mode()
def perplexity(model: torch.nn.Module, ids: torch.Tensor) -> float:
    return float(torch.exp(model(input_ids=ids, labels=ids).loss))


def agreement(reference: list[list[int]], candidate: list[list[int]]) -> tuple[float, int]:
    """(mean share of each row's tokens before its first divergence, rows identical throughout)."""
    shares = []
    for ref, got in zip(reference, candidate, strict=True):
        same = next((i for i, (a, b) in enumerate(zip(ref, got, strict=True)) if a != b), len(ref))
        shares.append(same / len(ref))
    return sum(shares) / len(shares), sum(s == 1.0 for s in shares)


def measure(reference: torch.nn.Module, candidate: torch.nn.Module, tokenizer, tokens: int = AGREE_TOKENS) -> Gate:
    started = time.perf_counter()
    prompts = prompt_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    ref_tokens = greedy(reference, prompts, tokens, pad)
    got_tokens = greedy(candidate, prompts, tokens, pad)
    share, exact = agreement(ref_tokens, got_tokens)
    device = next(reference.parameters()).device
    text = torch.tensor([tokenizer(TEXT).input_ids], device=device)
    return Gate(agreement=share, exact=exact, prompts=len(prompts), perplexity_reference=perplexity(reference, text),
                perplexity_int8=perplexity(candidate, text), seconds=time.perf_counter() - started)


def apply(model: torch.nn.Module, settings, tokenizer_dir: Path) -> torch.nn.Module:
    """The model the engine serves: ``model`` itself unless ``settings.weights`` asks for int8 and the gate
    passes, then its int8 copy. A refusal keeps ``model`` and logs why, with the figures."""
    if settings.weights != "int8":
        return model
    try:
        candidate = quantised(model)
    except (RuntimeError, ImportError) as e:
        log.warning("generate: int8 weights refused, serving %s: %s", _dtype(model), e)
        return model
    from transformers import AutoTokenizer

    try:
        gate = measure(model, candidate, AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True))
    except (OSError, ValueError) as e:  # no usable tokenizer in the snapshot: the gate cannot be measured
        log.warning("generate: int8 weights refused, serving %s: the quality gate cannot be measured (%s)",
                    _dtype(model), e)
        return model
    refusals = gate.refusals(settings.gate_min_agreement, settings.gate_max_perplexity_ratio)
    if refusals:
        log.warning("generate: int8 weights refused by the quality gate (%s), serving %s: %s",
                    "; ".join(refusals), _dtype(model), gate.figures())
        return model
    log.info("generate: int8 weight-only weights (per channel, LM head untied) passed the quality gate: %s",
             gate.figures())
    return candidate


def _dtype(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")
