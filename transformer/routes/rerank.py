"""Reranking with a cross-encoder snapshot (task ``rerank``): one query scored against many documents.

Two HTTP shapes over the one pipeline (``transformer/pipeline.py``: validation, admission with the
API key's cap and the deadline, pair tokenisation, then the same coalescer and predictor batcher as
embeddings, so pairs from many clients share forward passes); this module parses and formats only:

- ``POST /v1/rerank`` as Cohere and Jina take it: ``query``, ``documents`` (strings or ``{"text"}``),
  ``top_n``, ``return_documents`` -> ``results[{index, relevance_score, document?}]``, best first;
- ``POST /rerank`` as text-embeddings-inference takes it: ``query``, ``texts``, ``raw_scores``,
  ``return_text``, ``truncate`` -> ``[{index, score, text?}]``, best first.

v2 ``/infer`` with BYTES ``query`` [1] and ``text`` [n] -> FP32 ``score`` [n] in input order is the
kserve Model's (``model.py``). Scores are the sigmoid of the model's logit (sentence-transformers'
CrossEncoder default) unless ``raw_scores`` is set (``pipeline.scores``).
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapserve.http.gate import inference_route
from snapserve.errors import ServingError, json_object
from transformer.encoding_options import flag
from transformer.pipeline import scores


def ranked(values: np.ndarray, top_n=None) -> list[int]:
    """Indices best first (ties keep input order); ``top_n`` keeps the first ones."""
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise ServingError("validation", "'top_n' must be a positive integer")
    order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
    return order[:top_n] if top_n is not None else order


def document_texts(documents) -> list:
    """Cohere and Jina accept a document as a string or as ``{"text": ...}``."""
    if not isinstance(documents, list):
        return documents  # validate_texts names the problem
    return [d["text"] if isinstance(d, dict) and isinstance(d.get("text"), str) else d for d in documents]


# -- HTTP routes ----------------------------------------------------------------------------------
def json_response(value) -> Response:
    return Response(orjson.dumps(value), media_type="application/json")


def router(model) -> APIRouter:
    """Routes bound to one ``EmbeddingTransformer``."""
    api = APIRouter()

    async def cohere(request: Request) -> Response:
        """Cohere / Jina: ``{query, documents, top_n?, return_documents?}``."""
        body = json_object(await request.body())
        name = body.get("model", model.name)
        if name is not None and name != model.name:
            raise ServingError("not_found", f"model {name!r} is not served here; use {model.name!r}")
        if "documents" not in body:
            raise ServingError("validation", "'documents' is required: a list of strings")
        documents = document_texts(body["documents"])
        return_documents = flag(body.get("return_documents"), "return_documents", True)
        top_n = body.get("top_n")
        ranked(np.zeros(0), top_n)  # refuse a bad top_n before any work
        logits, tokens = await model.pipeline.rerank(body.get("query"), documents, dict(request.headers),
                                                     body.get("truncate", True))
        probabilities = scores(logits)
        results = []
        for i in ranked(probabilities, top_n):
            item = {"index": i, "relevance_score": float(probabilities[i])}
            if return_documents:
                item["document"] = {"text": documents[i]}
            results.append(item)
        return json_response({"id": request.headers.get("x-request-id", ""), "model": model.name,
                              "results": results, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def tei(request: Request) -> Response:
        """text-embeddings-inference: ``{query, texts, raw_scores?, return_text?, truncate?}``."""
        body = json_object(await request.body())
        if "texts" not in body:
            raise ServingError("validation", "'texts' is required: a list of strings")
        raw = flag(body.get("raw_scores"), "raw_scores", False)
        return_text = flag(body.get("return_text"), "return_text", False)
        logits, _ = await model.pipeline.rerank(body.get("query"), body["texts"], dict(request.headers),
                                                body.get("truncate", True))
        shown = scores(logits, raw)
        answer = []
        for i in ranked(shown):
            item = {"index": i, "score": float(shown[i])}
            if return_text:
                item["text"] = body["texts"][i]
            answer.append(item)
        return json_response(answer)

    inference_route(api, "/v1/rerank", cohere)
    inference_route(api, "/rerank", tei)
    return api
