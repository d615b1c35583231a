"""The transformer's pipeline for a generating snapshot: prompt -> token ids (CPU, here) ->
the predictor's generate stream -> text pieces that never split a character or leak a stop string.

The OpenAI routes (``transformer/routes/openai_chat.py``) call ``pieces``; kserve's own v1/v2 routes
answer that this model generates (there is no tensor answer to give).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import kserve
from tokenizers import Tokenizer

from snapserve import metadata
from snapserve.errors import ServingError
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
                                     settings.predictor_use_ssl)
        self.ready = True

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
        text = TextStream(self.tokenizer, stops)
        upstream = self.client.stream(prompt, parameters, headers)
        tokens = 0
        try:
            async for event in upstream:
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
            await upstream.aclose()

    async def drain(self) -> None:
        self.ready = False
        await self.client.close()
