"""OpenAI embeddings API on the transformer: POST {prefix}/v1/embeddings, GET {prefix}/v1/models.

kserve 0.21 ships an OpenAI data plane (``OpenAIEncoderModel``) but imports vLLM for its request
types, which would put torch and a 280 MB wheel into the CPU-only transformer image; this module
serves the same routes under the same prefix (``KSERVE_OPENAI_ROUTE_PREFIX``, default ``/openai``).
Errors under the prefix are OpenAI's ``{"error": {"message", "type", "code"}}`` (``errors.body_for``).
"""

from __future__ import annotations

import base64
import time

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapserve.http.gate import inference_route
from snapserve.errors import ServingError, json_object, openai_prefix
from transformer import encoding_options


def prefix() -> str:
    """The OpenAI routes' prefix; the error handlers read the same one to pick the body's shape."""
    return openai_prefix()


def vectors(matrix: np.ndarray, encoding_format: str) -> list:
    if encoding_format == "base64":
        return [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in matrix]
    return matrix.tolist()


def router(model) -> APIRouter:
    """Routes bound to one ``EmbeddingTransformer``."""
    api = APIRouter()
    created = int(time.time())

    async def embeddings(request: Request) -> Response:
        body = json_object(await request.body())
        name = body.get("model", model.name)
        if name != model.name:
            raise ServingError("not_found", f"model {name!r} is not served here; use {model.name!r}")
        if "input" not in body:
            raise ServingError("validation", "'input' is required: a string or a list of strings")
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise ServingError("validation", "'encoding_format' must be 'float' or 'base64'")
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        options = encoding_options.read(model, body)  # dimensions (Matryoshka), prompt_name (as TEI)
        matrix, tokens = await model.pipeline.embed(texts, dict(request.headers), body.get("truncate", True), options)
        data = [{"object": "embedding", "index": i, "embedding": v}
                for i, v in enumerate(vectors(matrix, encoding_format))]
        answer = {"object": "list", "data": data, "model": model.name,
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return Response(orjson.dumps(answer), media_type="application/json")

    inference_route(api, f"{prefix()}/v1/embeddings", embeddings)
    add_models_route(api, model.name, created)
    return api


def models_list(name: str, created: int) -> dict:
    """OpenAI's model list of the one model served here."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "snapserve"}]}


def add_models_route(api: APIRouter, name: str, created: int, path: str | None = None, extra: dict | None = None):
    """``GET {prefix}/v1/models`` (or ``path``): the one model served here (embeddings and chat alike);
    ``extra`` keys join the answer."""
    answer = orjson.dumps({**(extra or {}), **models_list(name, created)})

    async def models(_: Request) -> Response:
        return Response(answer, media_type="application/json")

    api.add_api_route(path or f"{prefix()}/v1/models", models, methods=["GET"])
