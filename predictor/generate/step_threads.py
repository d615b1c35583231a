"""``--generate_one_thread_tokens``: on a CPU, forward passes of few tokens run on one thread, the others on all.

A decode step of a few requests is hundreds of small operators (norms, rotary, attention per request, the
paged cache) around matrix-vector products; a second OpenMP thread adds a fork and a barrier to each and
speeds up only the products. On the 2-core AMD EPYC (Zen 4), SmolLM2-135M in bf16 with packed Linear layers,
in-process, two rounds: 1 request's inter-token latency 35.1 / 35.4 ms on one thread against 40.6 / 41.3 ms
on two; 8 requests 150.6 / 153.9 tok/s against 135.0 / 120.6; but 32 requests 254.2 / 256.5 against
298.3 / 278.2, and a prompt's prefill is faster on two. So the thread count follows the step: a forward
pre-hook on the model sets it from the step's token count (``torch.set_num_threads``, the engine's thread's
own OpenMP setting; the steps all run on that one thread).
"""

from __future__ import annotations

import torch


def step_tokens(args: tuple, kwargs: dict) -> int | None:
    """Tokens in a forward pass of a causal LM: the last dimension of its input ids (continuous batching packs
    every request's tokens into one row), or of its input embeddings' sequence axis."""
    ids = kwargs.get("input_ids", args[0] if args else None)
    if isinstance(ids, torch.Tensor):
        return int(ids.shape[-1])
    embeds = kwargs.get("inputs_embeds")
    return int(embeds.shape[-2]) if isinstance(embeds, torch.Tensor) else None


class StepThreads:
    """The forward pre-hook: one thread for steps of at most ``small`` tokens, ``threads`` for the others."""

    def __init__(self, threads: int, small: int):
        self.threads, self.small = threads, small
        self.current = torch.get_num_threads()
        self.steps = {1: 0, threads: 0}  # forward passes run at each count (for the log and the tests)

    def __call__(self, module, args, kwargs):
        tokens = step_tokens(args, kwargs)
        want = self.threads if tokens is None or tokens > self.small else 1
        if want != self.current:
            torch.set_num_threads(want)
            self.current = want
        self.steps[want] = self.steps.get(want, 0) + 1


def install(model: torch.nn.Module, threads: int, small: int) -> StepThreads | None:
    """Hook ``model`` when it runs on more than one CPU thread and ``small`` > 0; None when left alone."""
    if threads <= 1 or small <= 0:
        return None
    hook = StepThreads(threads, small)
    model.register_forward_pre_hook(hook, with_kwargs=True)
    return hook
