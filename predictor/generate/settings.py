"""The predictor's flags for the generate task, grouped as one settings object (no torch here).

Declared like the predictor's other settings (``snapserve.settings.setting``), nested as ``settings.generate``.

They configure transformers' own continuous batching (``ContinuousBatchingConfig``): the paged KV
cache, the tokens one forward pass takes, and how many requests the engine holds. ``0`` means
"pick for the device": on CUDA transformers sizes the cache from free memory; on CPU the defaults
fit the default model (SmolLM2-135M: 45 KiB of KV per token in fp32, so 8,192 tokens = 370 MiB).
"""

from __future__ import annotations

import dataclasses

from snapserve.settings import GENERATE, flags, non_negative, setting

CPU_KV_TOKENS = 8192
CPU_PAGE_SIZE = 64
CPU_BATCH_TOKENS = 256


@dataclasses.dataclass(frozen=True)
class GenerateSettings:
    kv_blocks: int = setting(0, "generate: blocks in the paged KV cache (0: 8192 tokens' worth on CPU, sized from "
                             "free memory on CUDA)", tasks=GENERATE)
    kv_page_size: int = setting(0, "generate: tokens per KV block (0: 64 on CPU, 256 on CUDA)", tasks=GENERATE)
    max_batch_tokens: int = setting(0, "generate: most tokens (prefill + decode) in one forward pass (0: 256 on CPU, "
                                    "auto on CUDA)", tasks=GENERATE, flag="generate_max_batch_tokens")
    max_queue_requests: int = setting(256, "generate: requests held at once, running or waiting; more get 429 + "
                                      "Retry-After", tasks=GENERATE)
    max_new_tokens: int = setting(1024, "generate: the most tokens one request may ask for", tasks=GENERATE)
    attention: str = setting("varlen", "generate: attention under continuous batching without flash kernels: 'varlen' "
                             "(each request attends to its own keys; cost grows with the batch) or 'library' "
                             "(transformers' sdpa over the whole batch with a mask; cost grows with its square)",
                             tasks=GENERATE, flag="generate_attention", choices=("varlen", "library"))
    linear: str = setting("packed", "generate: the Linear layers on a CPU: 'packed' (oneDNN with the weights reordered "
                          "once at start, as torch.compile's inductor does; 1.3-1.8x the speed of a decode step's "
                          "matrix products) or 'library' (torch's F.linear, MKL); ignored on CUDA",
                          tasks=GENERATE, flag="generate_linear", choices=("packed", "library"))
    one_thread_tokens: int = setting(16, "generate, CPU: forward passes of at most this many tokens (a decode step of "
                                     "a few requests) run on one thread, larger ones on all (0: always all); a small "
                                     "step is mostly small operators that a second thread slows down",
                                     tasks=GENERATE, flag="generate_one_thread_tokens")
    weights: str = setting("fp32", "generate: 'int8' serves int8 weights (per output channel) in the LM head and the "
                           "attention projections (CPU: fbgemm's dynamic int8) when the quality gate at start passes, "
                           "else the weights as loaded; 'fp32': the weights as loaded", tasks=GENERATE,
                           flag="generate_weights", choices=("fp32", "int8"))
    gate_min_agreement: float = setting(0.6, "generate: the reduced-precision gate (int8 weights; bf16 "
                                        "with --dtype auto on a CPU): least mean share of greedy tokens identical to "
                                        "the loaded weights' before the first divergence (8 prompts x 32 tokens)",
                                        tasks=GENERATE, type=non_negative, flag="generate_gate_min_agreement")
    gate_max_perplexity_ratio: float = setting(1.05, "generate: the reduced-precision gate: most perplexity of a "
                                               "fixed text, as a multiple of the loaded weights'", tasks=GENERATE,
                                               type=non_negative,
                                               flag="generate_gate_max_perplexity_ratio")
    prefix_sharing: bool = setting(True, "generate: requests that share a prompt's first KV blocks (a system prompt) "
                                   "share those blocks and skip their prefill (transformers' block sharing)",
                                   tasks=GENERATE, flag="generate_prefix_sharing")
    seed: int = setting(-1, "generate: seed of the sampling stream that requests without a seed of their own draw "
                        "from (-1: random); a request's seed gives it a stream of its own", tasks=GENERATE,
                        flag="generate_seed")

    def __post_init__(self):
        for name in ("kv_blocks", "kv_page_size", "max_batch_tokens", "one_thread_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{flag(name)} must be >= 0 (0: picked for the device)")
        if 0 < self.kv_page_size < 4:
            raise ValueError("--kv_page_size must be at least 4 tokens (0: 64 on CPU, 256 on CUDA)")
        for name in ("max_queue_requests", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")

    def resolved(self, cuda: bool) -> dict:
        """Keyword arguments for ``ContinuousBatchingConfig`` on this device (None: transformers picks)."""
        page = self.kv_page_size or (256 if cuda else CPU_PAGE_SIZE)
        blocks = self.kv_blocks or (None if cuda else max(1, CPU_KV_TOKENS // page))
        return {"page_size": page, "num_blocks": blocks,
                "max_batch_tokens": self.max_batch_tokens or (None if cuda else CPU_BATCH_TOKENS),
                "max_queue_size": self.max_queue_requests, "seed": None if self.seed < 0 else self.seed,
                "allow_block_sharing": self.prefix_sharing}


def flag(name: str) -> str:
    """The flag of field ``name`` (max_batch_tokens is --generate_max_batch_tokens)."""
    return next(f.name for f in flags(GenerateSettings) if f.field == name)
