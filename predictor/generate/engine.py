"""The generation engine: transformers' own continuous batching behind a small async seam.

``ContinuousBatchingManager`` (``model.init_continuous_batching()``) owns the scheduler, the paged
KV cache and the forward passes, on its own thread: requests join and leave the running batch at every
step. This module only admits requests (a bound, then 429), turns the manager's per-request
callbacks into an async stream of token deltas, cancels a request in the engine the moment its
consumer goes away (its KV blocks are freed at the next step), and feeds the metrics. It knows
nothing of HTTP.

Sampling is per request (``per_request_processors``): temperature, top_k and top_p travel with each
request. The last processor (``TokenDraw``) draws each sampled request's token itself and leaves only
that token, and the manager, set to ``do_sample=False``, takes the argmax: a greedy request is that
argmax of its raw logits, exactly as ``generate(do_sample=False)`` picks it, and on CPU the processors
skip the rows they would not change (``ChangedRowsOnly``), so a greedy row pays for no sort, softmax
or random draw. A request with its own ``seed`` draws from a stream of its own, the others from one
shared stream (``--generate_seed`` seeds it): the same prompt, parameters and seed give the same
tokens whatever else shares the batch, as in vLLM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
    ContinuousBatchingTemperatureLogitsWarper,
    ContinuousBatchingTopKLogitsWarper,
    ContinuousBatchingTopPLogitsWarper,
)
from transformers.generation.continuous_batching.requests import RequestState

from predictor import device as devices
from predictor.generate import attention
from predictor.generate import packed, precision, quantize, step_threads
from predictor.generate.settings import GenerateSettings
from predictor.generate.wait import WaitEstimate
from snapserve import metrics
from snapserve.scheduling import admission
from snapserve.errors import ServingError
from snapserve.metadata import ModelInfo

log = logging.getLogger("snapserve.predictor")


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None  # None: the engine's shared stream

    def processor_kwargs(self, vocab: int) -> dict:
        if self.temperature == 0:  # greedy: the values the library's processors leave unchanged (a seed changes nothing)
            return {"temperature": 1.0, "top_k": vocab, "top_p": TOP_P_OFF, "greedy": True}
        kwargs = {"temperature": float(self.temperature), "top_k": int(self.top_k or vocab), "top_p": float(self.top_p)}
        return kwargs if self.seed is None else {**kwargs, "seed": int(self.seed)}


TOP_P_OFF = 2.0  # a top_p the library's top-p leaves every score of (at 1.0 it still masks tokens of probability 0)
NO_SEED = -1  # a draw argument for a sampled request without a seed: it draws from the engine's shared stream
GREEDY = -2  # a draw argument for a greedy request: its scores are left alone for the manager's argmax
DRAW_BITS = 24  # the key of a seeded row's noise (the processors' argument rows are int32)


def seeded_uniform(seed: int, position: int) -> int:
    """The draw, in ``[0, 2**24)``, of the request with ``seed`` for its token at ``position`` (absolute,
    prompt included). Keyed by position rather than taken from a running generator, so a token the
    engine computes twice (a request preempted between scheduling and its update, or soft-reset and
    prefilled again) gets the same draw both times."""
    key = (seed % 2**64).to_bytes(8, "little") + position.to_bytes(8, "little")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> (64 - DRAW_BITS)


def eager_cpu(scores: torch.Tensor) -> bool:
    """Whether a processor may branch on the data: eager on CPU, where work on a row that needs none
    costs as much as the forward pass. Compiled or on an accelerator the whole batch is processed, with
    no branch on the data, so that torch.compile and CUDA graphs can take the step."""
    return scores.device.type == "cpu" and not torch.compiler.is_compiling()


def on_rows(scores: torch.Tensor, rows: torch.Tensor, process, *args: torch.Tensor) -> torch.Tensor:
    """``scores`` with ``process`` applied to the ``rows`` (indices) only, each of ``args`` cut to them."""
    if rows.numel() == 0:
        return scores
    if rows.numel() == scores.size(0):
        return process(scores, *args)
    return scores.index_copy(0, rows, process(scores[rows], *(arg[rows] for arg in args)))


class ChangedRowsOnly(ContinuousBatchingLogitsProcessor):
    """One of the library's per-request processors, run on CPU on only the rows whose value changes
    their scores: a greedy row (temperature 1, top_k the vocabulary, top_p ``TOP_P_OFF``) and a sampled
    one without top-k skip its full-vocabulary sort. The library's processors always process the whole
    batch, and transformers has no hook to replace them, so ``install_draw`` wraps them in place."""

    def __init__(self, inner: ContinuousBatchingLogitsProcessor, changes):
        self.inner, self.changes = inner, changes  # changes(args [B] int32, vocab) -> bool [B]
        self.supported_kwargs, self.ignored_kwargs = inner.supported_kwargs, inner.ignored_kwargs

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        self.inner.fill_defaults(int32_tensor)

    def prepare_tensor_args(self, requests_with_new_token: list) -> torch.Tensor:
        return self.inner.prepare_tensor_args(requests_with_new_token)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        if not eager_cpu(scores):
            return self.inner(scores, tensor_arg)
        args = tensor_arg[: scores.size(0)]
        return on_rows(scores, self.changes(args, scores.size(-1)).nonzero().squeeze(-1), self.inner, args)


CHANGES = {  # per library processor: the rows whose value is not an exact no-op (int32 args, as stored)
    ContinuousBatchingTemperatureLogitsWarper: lambda args, vocab: args.view(torch.float32) != 1.0,
    ContinuousBatchingTopKLogitsWarper: lambda args, vocab: args < vocab,
    ContinuousBatchingTopPLogitsWarper: lambda args, vocab: args.view(torch.float32) <= 1.0,
}


MASK32 = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding 32-bit values (products wrap; the mask keeps
    the low 32 bits): tensor ops only, the same on CPU and GPU."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & MASK32
    return h ^ (h >> 16)


def gumbel_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """[B, V] float32 Gumbel(0, 1) noise: row b's from ``keys[b]`` (a ``seeded_uniform``) and the token index."""
    index = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    h = _mix32((keys.to(torch.int64).unsqueeze(-1) * 0x9E3779B1 + index) & MASK32)
    h = _mix32((h + 0x632BE5AB * (keys.to(torch.int64).unsqueeze(-1) + 1)) & MASK32)
    uniform = (h.to(torch.float64) + 0.5) * 2.0**-32  # in (0, 1)
    return (-torch.log(-torch.log(uniform))).to(torch.float32)


class TokenDraw(ContinuousBatchingLogitsProcessor):
    """The last logits processor: it draws the next token of every sampled request and masks every
    other token to ``-inf``, so that the manager's argmax (the manager runs with ``do_sample=False``)
    can only pick that one. A request with a ``seed`` draws by Gumbel-max with noise of its own
    (the same prompt, parameters and seed give the same tokens whatever shares the batch); one without
    draws from the engine's shared stream (``torch.multinomial``, as the manager would). A greedy
    request's row is left alone: the manager's argmax of its raw logits is ``generate(do_sample=False)``'s
    token, and a batch of greedy rows pays for no softmax, sort or random draw."""

    supported_kwargs: ClassVar[dict[str, type]] = {"seed": int, "greedy": bool}
    ignored_kwargs: ClassVar[tuple[str, ...]] = ()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(GREEDY)  # rows past the batch: nothing to draw

    def prepare_tensor_args(self, requests_with_new_token: list) -> torch.Tensor:
        # position_offset already counts this step's query tokens: it is the new token's position
        draws = [GREEDY if (kwargs := r.state.logit_processor_kwargs).get("greedy")
                 else NO_SEED if (seed := kwargs.get("seed")) is None
                 else seeded_uniform(seed, r.state.position_offset) for r in requests_with_new_token]
        return torch.tensor(draws, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        draws = tensor_arg[: scores.size(0)]  # [B]
        if eager_cpu(scores):  # only the sampled rows pay
            return on_rows(scores, (draws != GREEDY).nonzero().squeeze(-1), self.draw, draws)
        return self.draw(scores, draws)

    @staticmethod
    def draw(scores: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """``scores`` [B, V] with each sampled row's drawn token alone left finite; greedy rows as they are."""
        probs = scores.softmax(dim=-1)  # [B, V]
        # Gumbel-max: argmax(scores + Gumbel noise) is a draw from softmax(scores). The noise of a token is
        # a function of the row's key and the token's index alone, so a tiny change in the logits (the same
        # request in another batch computes them in other shapes) moves the draw only when its two best
        # candidates are that close; an inverse CDF over 49k float32 sums moved it whenever the draw fell
        # near any boundary (seen on CI: the same seed gave another token alone than in a busy batch).
        token = (scores.float() + gumbel_noise(draws.clamp(min=0), scores.size(-1))).argmax(dim=-1, keepdim=True)
        shared = torch.multinomial(probs, num_samples=1)  # [B, 1]; the engine's stream (--generate_seed)
        token = torch.where((draws >= 0).unsqueeze(-1), token, shared)
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, token, True)
        return scores.masked_fill((draws != GREEDY).unsqueeze(-1) & ~keep, float("-inf"))


def install_draw(manager) -> None:
    """Wrap the library's processors in ``ChangedRowsOnly``, append ``TokenDraw`` and turn the manager's
    own sampling into an argmax, before ``start()`` sizes the processors' argument storage and builds the
    batch processor (which reads ``do_sample`` then). transformers builds that list from the generation
    config and has no hook to add a processor of our own, so this touches its internals (transformers
    5.24), checked here first."""
    import transformers

    processors = getattr(manager, "logit_processor", None)
    known = (isinstance(processors, ContinuousBatchingLogitsProcessorList)
             and isinstance(getattr(processors, "logits_processor", None), list)
             and isinstance(getattr(processors, "tensors_required", None), int)
             and isinstance(getattr(processors, "supported_keys", None), dict)
             and getattr(getattr(manager, "generation_config", None), "do_sample", None) is not None
             and "position_offset" in getattr(RequestState, "__dataclass_fields__", {}))
    if not known or manager.batch_processor is not None:
        raise RuntimeError(f"transformers {transformers.__version__}: the continuous batching internals that "
                           "predictor/generate/engine.py:install_draw relies on changed (or the manager already "
                           "started); per-request sampling cannot be honoured. Pin transformers 5.24 or port the "
                           "function")
    add_draw(processors)
    manager.generation_config.do_sample = False  # TokenDraw has drawn: the manager only takes the argmax


def add_draw(processors: ContinuousBatchingLogitsProcessorList) -> None:
    """Wrap the library's processors of ``processors`` in ``ChangedRowsOnly`` and append ``TokenDraw``."""
    if any(isinstance(p, TokenDraw) for p in processors.logits_processor):  # a manager transformers re-used
        return
    for i, processor in enumerate(processors.logits_processor):
        if type(processor) in CHANGES:
            processors.logits_processor[i] = ChangedRowsOnly(processor, CHANGES[type(processor)])
    processors.logits_processor.append(TokenDraw())
    processors.tensors_required += 1  # one argument row, allocated when the batch processor is created
    processors.supported_keys.update(TokenDraw.supported_kwargs)
    processors.do_processing = True


def check_draw(batch_processor) -> None:
    """After ``start()``: the batch processor took ``do_sample=False`` (else it would draw again)."""
    if getattr(getattr(batch_processor, "model_runner", None), "do_sample", True) is not False:
        raise RuntimeError("the continuous batching runner still samples: predictor/generate/engine.py:install_draw "
                           "needs porting to this transformers version")


@dataclasses.dataclass
class Delta:
    """New tokens of one request since the last delta; ``finish_reason`` on the last one."""

    token_ids: list[int]
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class GenerationEngine:
    def __init__(self, model_dir: Path, info: ModelInfo, settings: GenerateSettings, device: str = "auto",
                 dtype: str = "auto", cpu_threads: int = 0, cpu_bf16: bool = True):
        import transformers
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        devices.check_weights(model_dir)
        self.info = info
        self.settings = settings
        self.device = devices.resolve_device(device)
        self.dtype = devices.resolve_dtype(dtype, self.device)
        threads = devices.threads_per_instance(cpu_threads, 1)
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=self.dtype, local_files_only=True).to(self.device).eval()
        pack = packed.apply if self.device.type == "cpu" and settings.linear == "packed" else None
        if settings.weights == "int8":  # int8 quantises the fp32 weights, behind its gate
            self.model = quantize.apply(self.model, settings, tokenizer_dir=model_dir)
        elif dtype == "auto" and self.device.type == "cpu":  # bf16 where native, faster and within the gate
            self.model = precision.choose_cpu(self.model, settings, model_dir, cpu_bf16, prepare=pack)
            self.dtype = next(self.model.parameters()).dtype
        if pack:
            pack(self.model)  # the Linear layers the steps above left as they were (all, or int8's float ones)
        self.packed_linears = sum(isinstance(m, packed.PackedLinear) for m in self.model.modules())
        self.step_threads = step_threads.install(self.model, threads, settings.one_thread_tokens) \
            if self.device.type == "cpu" else None
        config = self.model.config
        eos = self.model.generation_config.eos_token_id
        eos = config.eos_token_id if eos is None else eos
        self.eos_ids = tuple(e for e in ([eos] if isinstance(eos, int) else (eos or ())) if e >= 0)
        self.vocab = int(config.vocab_size)
        # The processors must exist for per-request values to apply: transformers only builds one
        # with do_sample (install_draw then turns the manager's own draw off) and for a temperature that
        # is not 1.0 and a top_k / top_p that filters; every request sends its own values, so these
        # construction values are never used as defaults.
        generation = GenerationConfig(do_sample=True, temperature=0.5, top_k=50, top_p=0.9,
                                      eos_token_id=list(self.eos_ids) or -1, max_new_tokens=16)
        cb = ContinuousBatchingConfig(per_request_processors=True, **settings.resolved(self.device.type == "cuda"))
        self.manager = self.model.init_continuous_batching(generation_config=generation, continuous_batching_config=cb)
        if settings.attention == "varlen" and attention.applies(self.model.config):
            # after init_continuous_batching, whose check knows only the library's names; before start(),
            # which reads the implementation to decide that no batch-wide mask is needed
            self.model.set_attn_implementation(attention.register())
        install_draw(self.manager)
        resolved = self.manager.continuous_batching_config
        self.page_size = resolved.page_size
        self.held = 0  # requests admitted and not finished (running + waiting)
        self.wait = WaitEstimate()  # snapserve_estimated_wait_seconds, fed by generate()
        self.accepting = True
        self._ids = 0
        self._preemption_hook = False

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 120) -> None:
        """Start the manager's thread and wait for its batch processor (the KV cache is allocated)."""
        self.manager.start()
        # The manager's thread is not a daemon: if the main thread ends without a drain (a crash while starting
        # kserve), the process would hang on it. threading's own exit hooks run before it joins such threads
        # (concurrent.futures stops its workers there); a daemon watcher that woke at exit ran Python during
        # finalisation and aborted the process ("terminate called without an active exception").
        threading._register_atexit(functools.partial(stop_at_exit, weakref.ref(self.manager)))
        deadline = time.monotonic() + timeout
        while self.manager.batch_processor is None:
            if not self.manager.is_running() or time.monotonic() > deadline:
                raise RuntimeError("the continuous batching thread did not start; see the log above")
            time.sleep(0.05)
        processor = self.manager.batch_processor
        check_draw(processor)
        self._hook_preemptions(processor)
        self._hook_prefix_matches(processor.cache)
        metrics.GEN_RUNNING.set_function(lambda: len(processor.scheduler.active_requests))
        metrics.GEN_WAITING.set_function(
            lambda: len(processor.scheduler.waiting_requests) + self.manager.input_queue.qsize())
        metrics.GEN_KV_USAGE.set_function(lambda: kv_usage(processor.cache))
        metrics.export_wait("predictor", self.wait.seconds)
        metrics.GEN_CACHE_CONFIG.clear()
        metrics.GEN_CACHE_CONFIG.labels(*cache_config(processor.cache, self.page_size)).set(1)

    @staticmethod
    def _hook_preemptions(processor) -> None:
        """Count requests the scheduler takes out of the batch for lack of KV blocks (vLLM's
        preemptions): transformers logs them but keeps no counter, so the offloading call of this
        one processor is wrapped."""
        offloading = getattr(processor, "offloading_manager", None)
        original = getattr(offloading, "offload_requests", None)
        if original is None:
            return

        def offload_requests(*args, **kwargs):
            before = len(processor.scheduler.active_requests)
            try:
                return original(*args, **kwargs)
            finally:
                metrics.GEN_PREEMPTIONS.inc(max(0, before - len(processor.scheduler.active_requests)))

        offloading.offload_requests = offload_requests

    @staticmethod
    def _hook_prefix_matches(cache) -> None:
        """Count prompt tokens looked up among the shared KV blocks and found there (vLLM's prefix cache
        queries and hits): transformers only logs a match at debug level."""
        original = getattr(cache, "search_prefix_match", None)
        if original is None or not getattr(cache, "use_prefix_sharing", False):
            return

        def search_prefix_match(request_id, prompt_ids):
            found = original(request_id, prompt_ids)
            metrics.GEN_PREFIX_QUERIES.inc(len(prompt_ids))
            metrics.GEN_PREFIX_HITS.inc(found)
            return found

        cache.search_prefix_match = search_prefix_match

    def describe(self) -> dict:
        cfg = self.manager.continuous_batching_config
        return {"task": "generate", "device": self.device.type, "dtype": str(self.dtype).removeprefix("torch."),
                "attention": self.model.config._attn_implementation,
                "linear": f"oneDNN packed ({self.packed_linears})" if self.packed_linears else "torch",
                "threads": (f"1 up to {self.step_threads.small} tokens a step, else {self.step_threads.threads}"
                            if self.step_threads else torch.get_num_threads() if self.device.type == "cpu" else "-"),
                "prefix_sharing": self.settings.prefix_sharing,
                "kv_blocks": cfg.num_blocks, "kv_page_size": cfg.page_size, "max_batch_tokens": cfg.max_batch_tokens,
                "max_queue_requests": self.settings.max_queue_requests}

    async def stop(self, timeout: float) -> None:
        """Refuse new requests, let the admitted ones finish within ``timeout``, stop the thread."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        while self.held and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self.manager.stop, True, max(1.0, deadline - time.monotonic()))
        attention.forget()

    # -- requests ------------------------------------------------------------------------
    def max_tokens_for(self, prompt_tokens: int) -> int:
        """The most new tokens that fit after a prompt: the context, the KV cache and the flag."""
        fits = self.info.max_length - prompt_tokens
        cache = self.manager.batch_processor.cache if self.manager.batch_processor else None
        if cache is not None:
            fits = min(fits, cache.num_blocks * self.page_size - prompt_tokens - self.page_size)
        return max(0, min(fits, self.settings.max_new_tokens))

    def admit(self, within_s: float | None = None) -> None:
        """One more request, within ``within_s`` of its deadline: snapserve's one admission rule over
        the requests held (running or waiting)."""
        if not self.accepting:
            raise ServingError("unavailable", "server is shutting down", retry_after=1)
        admission.admit(admission.Load(self.held, self.settings.max_queue_requests, unit="generation requests "
                                       "(--max_queue_requests)"), 1, within_s)

    async def generate(self, prompt: list[int], sampling: Sampling) -> AsyncIterator[Delta]:
        """Stream one request's new tokens. Closing the iterator (the client went away) cancels
        the request in the engine."""
        self.admit()
        self._ids += 1
        request_id = f"gen-{self._ids}"
        outputs: asyncio.Queue = asyncio.Queue()
        eos = [] if sampling.ignore_eos else list(self.eos_ids)
        stops = [*eos, *sampling.stop_token_ids] or -1
        self.held += 1
        started = time.perf_counter()
        last, sent, finished = started, 0, False
        self.wait.admitted(len(prompt), sampling.max_tokens, started)
        self.manager.register_result_handler(request_id, outputs.put_nowait)
        try:
            added = self.manager.add_request(prompt, request_id=request_id, max_new_tokens=sampling.max_tokens,
                                             streaming=True, eos_token_id=stops,
                                             **sampling.processor_kwargs(self.vocab))
            if added is None:
                raise ServingError("unavailable", "the generation engine is not accepting requests", retry_after=1)
            metrics.GEN_PROMPT_TOKENS.inc(len(prompt))
            while True:
                output = await outputs.get()
                if output.error:
                    finished = True
                    log.error("generation %s failed: %s", request_id, output.error)
                    raise ServingError("internal", "generation failed")
                tokens = list(output.generated_tokens)
                now = time.perf_counter()
                new = tokens[sent:]
                if new:
                    (metrics.GEN_TTFT if sent == 0 else metrics.GEN_ITL).observe(now - last)
                    metrics.GEN_GENERATION_TOKENS.inc(len(new))
                    self.wait.progressed(0 if sent else len(prompt), len(new), now)
                last, sent = now, len(tokens)
                if output.is_finished():
                    finished = True
                    reason = "stop" if tokens and tokens[-1] in set(stops if stops != -1 else ()) else "length"
                    metrics.GEN_E2E.observe(now - started)
                    metrics.GEN_SUCCESS.labels(reason).inc()
                    yield Delta(new, reason, len(prompt), len(tokens))
                    return
                if new:
                    yield Delta(new, None, len(prompt), len(tokens))
        finally:
            self.held -= 1
            self.wait.ended(0 if sent else len(prompt), sampling.max_tokens - sent, time.perf_counter())
            if not finished:  # the consumer went away (or failed): free the request's KV blocks now
                self.manager.cancel_request(request_id)
                metrics.GEN_SUCCESS.labels("abort").inc()
            self._forget(request_id)

    def _forget(self, request_id: str) -> None:
        """A cancelled request never delivers a last output, so its handler would stay registered
        (transformers removes it only on a finished output)."""
        router = self.manager.output_router
        with router._lock:
            router.result_handlers.pop(request_id, None)


def stop_at_exit(manager_ref) -> None:
    manager = manager_ref()
    if manager is not None and manager.is_running():
        manager.stop(block=False)


def kv_usage(cache) -> float:
    """Share of the paged KV cache that requests hold, 0-1 (vLLM's kv_cache_usage_perc). Blocks kept only for
    prefix de-duplication count as free, as in vLLM: nobody holds them and the scheduler evicts them as soon
    as it needs room (``compute_free_capacity`` counts them as used, so the gauge never fell back after a
    load). O(allocators): counters the engine thread keeps, read without its lock."""
    total = cache.num_sectors * cache.bytes_per_sector
    cached = sum(len(a.ledger.cached_blocks) * a.bytes_per_block for a in cache.cache_allocators.values())
    free = cache.compute_free_capacity(False) + cached
    return min(1.0, max(0.0, 1.0 - free / total)) if total else 0.0


def cache_config(cache, page_size: int) -> tuple[str, str]:
    """(block_size, num_gpu_blocks) of the paged cache as allocated: tokens per block, whole-model blocks."""
    pages = {a.tokens_per_page for a in cache.cache_allocators.values()}
    return str(min(pages) if pages else page_size), str(cache.num_blocks)
