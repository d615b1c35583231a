"""OpenAI chat and completions on the transformer: ``POST {prefix}/v1/chat/completions``,
``{prefix}/v1/completions`` (``stream: true`` as SSE ending in ``data: [DONE]``, or one JSON) and
``GET {prefix}/v1/models``, over a ``ChatModel``; and vLLM's routes beside them, which the field's
clients and the Gateway API Inference Extension assume: ``POST /v1/chat/completions``,
``/v1/completions`` (the same handlers), ``GET /health`` (200 when ready, else 503 as readiness) and
``GET /v1/models``. That last one is kserve's v1 model list too (``{"models": [...]}``), registered
after ours when the server starts, so ours answers both kinds of client at once:
``{"models": [name], "object": "list", "data": [...]}``. Errors on the OpenAI routes, vLLM's
included, are OpenAI's ``{"error": {"message", "type", "code"}}``.

Validated here, refused from the status table: a ``model`` not served (404), bad messages or
parameters (400), ``n`` other than 1, log probabilities and tools (400: not served). Both are
declared inference routes: a client that goes away is cancelled by the gate
(``snapserve.http.streaming``), which, like a stop string, closes the predictor's stream and so
cancels the request there. Parse and format only: admission, deadlines and retries are the
``ChatModel``'s.
"""

from __future__ import annotations

import time
import uuid

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapserve.errors import ServingError, json_object
from snapserve.http.gate import inference_route, readiness_route
from snapserve.http.streaming import sse_response
from transformer.chat.template import messages_of
from transformer.routes.openai import add_models_route, prefix

MAX_STOPS = 16


def _bounded(body: dict, name: str, kind, low, high, strict_low: bool = False):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ServingError("validation", f"'{name}' must be {'an integer' if kind is int else 'a number'}")
    if value < low or (strict_low and value == low) or (high is not None and value > high):
        raise ServingError("validation", f"'{name}' must be in {'(' if strict_low else '['}{low}, "
                           f"{high if high is not None else 'inf'}]")
    return kind(value)


def parameters(body: dict, model_name: str) -> tuple[dict, list[str], bool, bool]:
    """(predictor parameters, stop strings, stream, include_usage) from an OpenAI body."""
    name = body.get("model", model_name)
    if name != model_name:
        raise ServingError("not_found", f"model {name!r} is not served here; use {model_name!r}")
    for key in ("n", "best_of"):
        if body.get(key) not in (None, 1):
            raise ServingError("validation", f"'{key}' must be 1: one choice per request is served")
    for key in ("logprobs", "top_logprobs", "tools", "functions", "echo", "suffix", "logit_bias"):
        if body.get(key) not in (None, False, [], {}, ""):
            raise ServingError("validation", f"'{key}' is not supported by this server")
    out = {}
    max_tokens = _bounded(body, "max_completion_tokens", int, 1, None) or _bounded(body, "max_tokens", int, 1, None)
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    for key, kind, low, high, strict in (("temperature", float, 0, 2, False), ("top_p", float, 0, 1, True),
                                         ("top_k", int, -1, None, False), ("seed", int, -(2**63), 2**64 - 1, False)):
        value = _bounded(body, key, kind, low, high, strict)
        if value is not None:
            out[key] = value
    if body.get("ignore_eos") is not None:  # vLLM's extension
        if not isinstance(body["ignore_eos"], bool):
            raise ServingError("validation", "'ignore_eos' must be true or false")
        out["ignore_eos"] = body["ignore_eos"]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise ServingError("validation", f"'stop' must be a string or a list of at most {MAX_STOPS} non-empty strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ServingError("validation", "'stream' must be true or false")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise ServingError("validation", "'stream_options' is an object, and only with stream: true")
    include_usage = bool((options or {}).get("include_usage", False))
    return out, stops, stream, include_usage


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def router(model) -> APIRouter:
    """Routes bound to one ``ChatModel``."""
    api = APIRouter()
    created = int(time.time())

    async def run(request: Request, chat: bool) -> Response:
        payload = json_object(await request.body())
        params, stops, stream, include_usage = parameters(payload, model.name)
        if chat:
            prompt = model.chat_prompt(messages_of(payload.get("messages")))
        else:
            prompt = model.text_prompt(prompt_text(payload.get("prompt")))
        headers = dict(request.headers)
        rid = ("chatcmpl-" if chat else "cmpl-") + (headers.get("x-request-id") or uuid.uuid4().hex)
        base = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": int(time.time()),
                "model": model.name}
        pieces = model.pieces(prompt, params, stops, headers)
        if stream:
            first = await anext(pieces)  # a refusal (429, 503, 504, ...) still gets its own status, before the 200
            return sse_response(chunks(base, chat, first, pieces, len(prompt), include_usage), rid, done=True,
                                path=request.scope["path"])
        text, tokens, reason = await collect(pieces)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        answer = {**base, "object": "chat.completion" if chat else "text_completion", "choices": [choice],
                  "usage": usage(len(prompt), tokens)}
        return Response(orjson.dumps(answer), media_type="application/json")

    async def chat_completions(request: Request) -> Response:
        return await run(request, chat=True)

    async def completions(request: Request) -> Response:
        return await run(request, chat=False)

    for root in dict.fromkeys((prefix(), "")):  # the prefixed routes, then vLLM's
        inference_route(api, f"{root}/v1/chat/completions", chat_completions)
        inference_route(api, f"{root}/v1/completions", completions)
    if prefix():
        add_models_route(api, model.name, created)
    add_models_route(api, model.name, created, "/v1/models", extra={"models": [model.name]})
    readiness_route(api, "/health", lambda: model.ready)
    return api


def prompt_text(value) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value:
        raise ServingError("validation", "'prompt' must be a non-empty string (one prompt per request)")
    return value


async def collect(pieces) -> tuple[str, int, str]:
    texts, piece = [], None
    async for piece in pieces:
        texts.append(piece.text)
    return "".join(texts), piece.completion_tokens, piece.finish_reason


async def chunks(base: dict, chat: bool, first, pieces, prompt_tokens: int, include_usage: bool):
    """The OpenAI chunks of one stream (the SSE writer frames them, and ends an error as its last event)."""
    def chunk(text: str | None, reason: str | None, role: bool = False) -> dict:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        return {**base, "choices": [choice], **({"usage": None} if include_usage else {})}

    try:
        if chat:
            yield chunk(None, None, role=True)
        piece = first
        while True:
            if piece.text or piece.finish_reason:
                yield chunk(piece.text, piece.finish_reason)
            if piece.finish_reason:
                break
            piece = await anext(pieces)
        if include_usage:
            yield {**base, "choices": [], "usage": usage(prompt_tokens, piece.completion_tokens)}
    finally:
        await pieces.aclose()
