"""Tokenisation endpoints as text-embeddings-inference has them, with the served model's tokenizer.

``POST /tokenize`` ``{"inputs": str | [str], "add_special_tokens": true, "prompt_name": null}`` ->
one list per input of ``{"id", "text", "special", "start", "stop"}`` (``start``/``stop``: character
offsets into the input; special tokens have none and get null). No truncation: clients use it to
budget against the model's maximum.
``POST /decode`` ``{"ids": [int] | [[int]], "skip_special_tokens": true}`` -> a list of strings.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapserve.errors import ServingError, json_object
from transformer import encoding_options
from transformer.encoding_options import flag


def tokens_of(encoding, text: str) -> list[dict]:
    out = []
    for i, (start, stop) in enumerate(encoding.offsets):
        special = bool(encoding.special_tokens_mask[i])
        out.append({"id": encoding.ids[i], "text": encoding.tokens[i] if special else text[start:stop],
                    "special": special, "start": None if special else start, "stop": None if special else stop})
    return out


def router(model) -> APIRouter:
    """Routes bound to one ``EmbeddingTransformer``."""
    api = APIRouter()
    tokenizer = model.encoder.untruncated  # no truncation: report what the text really costs

    async def tokenize(request: Request) -> Response:
        body = json_object(await request.body())
        if "inputs" not in body:
            raise ServingError("validation", "'inputs' is required: a string or a list of strings")
        texts = [body["inputs"]] if isinstance(body["inputs"], str) else body["inputs"]
        texts = encoding_options.prompted({"prompt": encoding_options.prompt(model, body.get("prompt_name"))},
                                          model.pipeline.validate_texts(texts))
        special = flag(body.get("add_special_tokens"), "add_special_tokens", True)
        loop = asyncio.get_running_loop()
        encoded = await loop.run_in_executor(None, lambda: tokenizer.encode_batch(texts, add_special_tokens=special))
        answer = [tokens_of(e, t) for e, t in zip(encoded, texts, strict=True)]
        return Response(orjson.dumps(answer), media_type="application/json")

    async def decode(request: Request) -> Response:
        body = json_object(await request.body())
        ids = body.get("ids")
        if isinstance(ids, list) and ids and all(is_int(i) for i in ids):
            ids = [ids]
        if not isinstance(ids, list) or not ids or not all(isinstance(row, list) for row in ids):
            raise ServingError("validation", "'ids' must be a non-empty list of token ids, or a list of such lists")
        if len(ids) > model.settings.max_texts:
            raise ServingError("payload_too_large", f"{len(ids)} sequences in one request; the limit is "
                               f"{model.settings.max_texts}")
        vocab = model.info.vocab_size or tokenizer.get_vocab_size(with_added_tokens=True)
        for row in ids:
            if not all(is_int(i) and 0 <= i < vocab for i in row):
                raise ServingError("validation", f"token ids must be integers in [0, {vocab})")
        skip = flag(body.get("skip_special_tokens"), "skip_special_tokens", True)
        texts = tokenizer.decode_batch(ids, skip_special_tokens=skip)
        return Response(orjson.dumps(texts), media_type="application/json")

    api.add_api_route("/tokenize", tokenize, methods=["POST"])
    api.add_api_route("/decode", decode, methods=["POST"])
    return api


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
