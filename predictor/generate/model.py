"""The kserve Model for the generate task: validates a KServe/Triton *generate extension* request,
runs it through the continuous-batching engine, and shapes its answer (one JSON, or SSE events).

Request: ``{"input_ids": [int, ...]}`` or ``{"text_input": "..."}`` (tokenised here, so the predictor
serves alone), with ``parameters``: ``max_tokens``, ``temperature`` (0: greedy), ``top_p``, ``top_k``,
``seed`` (the same seed, prompt and parameters give the same tokens), ``stop_token_ids``,
``ignore_eos``. Answer: ``output_ids`` (the generated ids, a stop or EOS token included),
``text_output`` when the request sent text, ``finish_reason`` (``stop`` / ``length``) and ``usage``.
A stream carries the same keys per event, the ids being the new ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import kserve

from predictor.config import Settings
from predictor.generate.engine import Delta, GenerationEngine, Sampling
from snapserve import deadlines, metadata
from snapserve.errors import ServingError

log = logging.getLogger("snapserve.predictor")
PARAMETERS = {"max_tokens", "temperature", "top_p", "top_k", "seed", "stop_token_ids", "ignore_eos", "stream"}


@dataclasses.dataclass
class GenerateJob:
    prompt: list[int]
    sampling: Sampling
    text: bool  # the client sent text_input: answer with text_output too
    request_id: str
    deadline: float = 0.0  # time.monotonic() by which its first token must come (else 504)


def _number(params: dict, name: str, kind, low: float, high: float | None, default):
    value = params.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ServingError("validation", f"parameter {name!r} must be {'an integer' if kind is int else 'a number'}")
    if value < low or (high is not None and value > high):
        raise ServingError("validation", f"parameter {name!r} must be in [{low}, {high if high is not None else 'inf'}]")
    return kind(value)


class GenerateModel(kserve.Model):
    def __init__(self, settings: Settings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.engine: GenerationEngine | None = None
        self.tokenizer = None
        self.text_stream = None

    def load(self) -> bool:
        from snapserve import snapshot

        s = self.settings
        if s.verify_snapshot and snapshot.verify(s.model_dir):
            log.info("snapshot manifest verified: %s", s.model_dir / snapshot.MANIFEST)
        self.info = metadata.read(s.model_dir, s.task, s.max_length)
        if self.info.task != metadata.GENERATE:
            raise metadata.SnapshotInvalid(f"{s.model_dir} is a {self.info.task} snapshot, not a causal LM")
        if (Path(s.model_dir) / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(Path(s.model_dir) / "tokenizer.json"))
        self.engine = GenerationEngine(s.model_dir, self.info, s.generate, s.device, s.dtype, s.cpu_threads,
                                       s.cpu_bf16)
        self.engine.start()
        log.info("model %s: %s context=%d", s.model_name,
                 " ".join(f"{k}={v}" for k, v in self.engine.describe().items()), self.info.max_length)
        if s.warmup:
            import asyncio

            loop = asyncio.new_event_loop()  # not asyncio.run: kserve later needs the thread's default loop
            try:
                loop.run_until_complete(self._warmup())
            finally:
                loop.close()
        self.ready = True
        return self.ready

    async def _warmup(self) -> None:
        async for _ in self.engine.generate([self.engine.eos_ids[0] if self.engine.eos_ids else 0] * 4,
                                            Sampling(max_tokens=2, temperature=0)):
            pass

    async def predict(self, payload, headers=None):
        raise ServingError("validation", f"{self.name} generates text: POST /v2/models/{self.name}/generate "
                           "or /generate_stream (the KServe generate extension)")

    # -- requests ------------------------------------------------------------------------
    def parse(self, body: dict, headers) -> GenerateJob:
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise ServingError("validation", "'parameters' must be an object")
        unknown = sorted(set(params) - PARAMETERS)
        if unknown:
            raise ServingError("validation", f"unknown parameters {unknown}; supported: {sorted(PARAMETERS)}")
        prompt, text = self._prompt(body)
        if len(prompt) >= self.info.max_length:
            raise ServingError("unprocessable", f"the prompt is {len(prompt)} tokens; this model's context is "
                               f"{self.info.max_length} tokens, so a prompt may have at most {self.info.max_length - 1}")
        room = self.engine.max_tokens_for(len(prompt))
        if room < 1:
            raise ServingError("unprocessable", f"the prompt is {len(prompt)} tokens and leaves no room to generate "
                               "in the KV cache (--kv_blocks)")
        max_tokens = min(_number(params, "max_tokens", int, 1, None, room), room)
        stop_ids = params.get("stop_token_ids") or []
        if not isinstance(stop_ids, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < self.engine.vocab for t in stop_ids):
            raise ServingError("validation", f"'stop_token_ids' must be a list of token ids in [0, {self.engine.vocab})")
        ignore_eos = params.get("ignore_eos", False)
        if not isinstance(ignore_eos, bool):
            raise ServingError("validation", "'ignore_eos' must be true or false")
        sampling = Sampling(
            max_tokens=max_tokens,
            temperature=_number(params, "temperature", float, 0.0, 100.0, 1.0),
            top_p=_number(params, "top_p", float, 1e-9, 1.0, 1.0),
            top_k=max(0, _number(params, "top_k", int, -1, None, 0)),
            stop_token_ids=tuple(stop_ids), ignore_eos=ignore_eos,
            seed=_number(params, "seed", int, -(2**63), 2**64 - 1, None))
        rid = body.get("id") if isinstance(body.get("id"), str) else None
        deadline = time.monotonic() + deadlines.timeout_for(headers, self.settings.request_timeout_ms)
        return GenerateJob(prompt, sampling, text, rid or (headers or {}).get("x-request-id") or uuid.uuid4().hex,
                           deadline)

    def admit(self, job: GenerateJob) -> None:
        """The engine's admission (snapserve.scheduling.admission) for one request within its deadline."""
        self.engine.admit(job.deadline - time.monotonic() if self.settings.drop_abandoned else None)

    def _prompt(self, body: dict) -> tuple[list[int], bool]:
        if "input_ids" in body:
            ids = body["input_ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise ServingError("validation", "'input_ids' must be a non-empty list of token ids")
            if min(ids) < 0 or max(ids) >= self.engine.vocab:
                raise ServingError("validation", f"token ids must be in [0, {self.engine.vocab})")
            return ids, False
        if "text_input" in body:
            text = body["text_input"]
            if not isinstance(text, str) or not text:
                raise ServingError("validation", "'text_input' must be a non-empty string")
            if self.tokenizer is None:
                raise ServingError("validation", "this snapshot has no tokenizer.json: send input_ids")
            return self.tokenizer.encode(text, add_special_tokens=True).ids, True
        raise ServingError("validation", "expected 'input_ids' (token ids) or 'text_input' (a string)")

    # -- answers -------------------------------------------------------------------------
    def _event(self, job: GenerateJob, delta: Delta, text: str | None) -> dict:
        event = {"id": job.request_id, "model_name": self.name, "model_version": "", "output_ids": delta.token_ids,
                 "finish_reason": delta.finish_reason}
        if text is not None:
            event["text_output"] = text
        if delta.finish_reason is not None:
            event["usage"] = {"prompt_tokens": delta.prompt_tokens, "completion_tokens": delta.completion_tokens}
        return event

    async def stream(self, job: GenerateJob) -> AsyncIterator[dict]:
        from snapserve.textstream import TextStream

        decoder = TextStream(self.tokenizer) if job.text else None
        deltas = self.engine.generate(job.prompt, job.sampling)
        try:
            first = await asyncio.wait_for(anext(deltas), max(0.001, job.deadline - time.monotonic())) \
                if self.settings.drop_abandoned else await anext(deltas)
        except TimeoutError:  # the generator was cancelled inside: the request has left the engine
            raise ServingError("timeout", "no token within the request's deadline") from None
        async for delta in _chain(first, deltas):
            text = None
            if decoder is not None:
                text = decoder.step(delta.token_ids) + (decoder.finish() if delta.finish_reason else "")
            yield self._event(job, delta, text)

    async def complete(self, job: GenerateJob) -> dict:
        ids, pieces, last = [], [], None
        async for event in self.stream(job):
            ids.extend(event["output_ids"])
            pieces.append(event.get("text_output") or "")
            last = event
        return {**last, "output_ids": ids, **({"text_output": "".join(pieces)} if job.text else {})}

    async def drain(self) -> None:
        """Turn not-ready, finish the admitted requests, stop the engine's thread."""
        self.ready = False
        if self.engine is not None:
            await self.engine.stop(self.settings.grace_period)


async def _chain(first, rest):
    yield first
    async for item in rest:
        yield item
