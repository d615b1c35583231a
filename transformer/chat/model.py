"""The transformer's pipeline for a generating snapshot: prompt -> token ids (CPU, here) -> admission
-> the predictor's generate stream -> text pieces that never split a character or leak a stop string.

Admission is snapserve's one rule (``snapserve.scheduling.admission``) over the chat requests this
process holds, waiting or streaming (``--max_queue_requests``, and per API key
``--max_queue_requests_per_key`` or the key's ``max_queued=``). A request's deadline is its client's
``x-request-timeout-ms`` / ``request-timeout`` capped by ``--request_timeout_ms``: it bounds admission
and the wait for the first token, retries while no predictor answers included; a stream that has
started runs to its end unless the client asked for a deadline of its own, which then ends it with a
timeout event.

The OpenAI routes (``transformer/routes/openai_chat.py``) call ``pieces``; kserve's own v1/v2 routes
answer that this model generates (there is no tensor answer to give).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import kserve
from tokenizers import Tokenizer

from snapserve import deadlines, metadata, metrics, tenants
from snapserve.deadlines import requested_timeout
from snapserve.errors import ServingError
from snapserve.scheduling import admission
from snapserve.textstream import TextStream
from transformer.chat.template import ChatTemplate
from transformer.config import Settings
from transformer.chat.client import GenerateClient


@dataclasses.dataclass
class Piece:
    text: str
    completion_tokens: int
    finish_reason: str | None = None


class ChatModel(kserve.Model):
    def __init__(self, settings: Settings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.info = metadata.read(settings.model_dir, "auto", settings.max_length)
        path = Path(settings.model_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the transformer needs the snapshot's fast tokenizer")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.template = ChatTemplate.load(settings.model_dir)
        self.client = GenerateClient(settings.predictor_host, settings.model_name, settings.predictor_timeout,
                                     settings.predictor_use_ssl, settings.predictor_connect_timeout_ms / 1000)
        self.held = 0  # chat requests admitted and not finished (waiting for the predictor or streaming)
        self.held_by_tenant: collections.Counter[str] = collections.Counter()
        self.awaiting = metrics.awaiting_predictor()  # held requests with no first event yet (wakes a predictor at 0)
        self.ready = True

    # -- admission -----------------------------------------------------------------------
    def timeout_s(self, asked: float | None) -> float:
        """Seconds a request may wait for its first token: its client's ask, capped by --request_timeout_ms."""
        return deadlines.capped(asked, self.settings.request_timeout_ms)

    def max_queued(self, tenant: tenants.Tenant) -> int:
        """A key's cap on held requests (``Tenant.cap``: its own, else --max_queue_requests_per_key, else half of --max_queue_requests)."""
        return tenant.cap(self.settings.max_queue_requests_per_key, self.settings.max_queue_requests)

    def refuse_if_full(self, count: int, headers=None) -> None:
        """The door check (before the body is read) and the admission of one request: 429 / 504."""
        tenant = tenants.from_headers(headers)
        within = self.timeout_s(requested_timeout(headers)) if self.settings.drop_abandoned else None
        load = admission.Load(self.held, self.settings.max_queue_requests, self.held_by_tenant[tenant.id],
                              unit="chat requests")
        admission.admit(load, count, within, self.max_queued(tenant))

    async def predict(self, payload, headers=None, response_headers=None):
        prefix = "/openai/v1"
        raise ServingError("validation", f"{self.name} generates text: POST {prefix}/chat/completions or "
                           f"{prefix}/completions")

    def validate(self, payload):
        return payload

    async def preprocess(self, payload, headers=None):
        return await self.predict(payload, headers)

    # -- prompts -------------------------------------------------------------------------
    def check_chars(self, text: str) -> None:
        if len(text) > self.settings.max_text_chars:
            raise ServingError("payload_too_large", f"the prompt has {len(text)} characters; the limit is "
                               f"{self.settings.max_text_chars} (--max_text_chars)")

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        if self.template is None:
            raise ServingError("validation", "this snapshot has no chat template; use /openai/v1/completions")
        self.check_chars("".join(m["content"] for m in messages))
        return self.tokenizer.encode(self.template.render(messages), add_special_tokens=False).ids

    def text_prompt(self, text: str) -> list[int]:
        self.check_chars(text)
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    # -- generation ----------------------------------------------------------------------
    async def pieces(self, prompt: list[int], parameters: dict, stops: list[str],
                     headers: dict | None = None) -> AsyncIterator[Piece]:
        """Text pieces of one generation; the last carries ``finish_reason``. A stop string ends
        it at once (the upstream stream is closed, which cancels the request in the predictor)."""
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        asked = requested_timeout(headers) if self.settings.drop_abandoned else None
        deadline = time.monotonic() + self.timeout_s(asked)
        self.refuse_if_full(1, headers)
        tenant = tenants.from_headers(headers).id
        self.held += 1
        self.held_by_tenant[tenant] += 1
        text = TextStream(self.tokenizer, stops)
        upstream = self.client.stream(prompt, parameters, headers, deadline)
        tokens, awaiting = 0, True
        self.awaiting.inc()
        try:
            async for event in upstream:
                if awaiting:
                    awaiting = False
                    self.awaiting.dec()
                if asked is not None and time.monotonic() > deadline:
                    raise ServingError("timeout", f"the request's deadline of {asked * 1000:.0f} ms passed")
                tokens += len(event.get("output_ids") or ())
                piece = text.step(event.get("output_ids") or ())
                if text.stopped:
                    yield Piece(piece, tokens, "stop")
                    return
                reason = event.get("finish_reason")
                if reason:
                    yield Piece(piece + text.finish(), tokens, reason)
                    return
                if piece:
                    yield Piece(piece, tokens)
            raise ServingError("upstream", "the predictor's stream ended without a finish reason")
        finally:
            if awaiting:  # no predictor answer came: an error, the deadline, or the client left
                self.awaiting.dec()
            self.held -= 1
            self.held_by_tenant[tenant] -= 1
            if self.held_by_tenant[tenant] <= 0:
                del self.held_by_tenant[tenant]
            await upstream.aclose()

    async def drain(self) -> None:
        self.ready = False
        await self.client.close()
