"""Reranking with a cross-encoder snapshot (task ``rerank``): one query scored against many documents.

Three shapes over one pipeline (pair tokenisation, then the same coalescer and predictor batcher as
embeddings, so pairs from many clients share forward passes):

- ``POST /v1/rerank`` as Cohere and Jina take it: ``query``, ``documents`` (strings or ``{"text"}``),
  ``top_n``, ``return_documents`` -> ``results[{index, relevance_score, document?}]``, best first;
- ``POST /rerank`` as text-embeddings-inference takes it: ``query``, ``texts``, ``raw_scores``,
  ``return_text``, ``truncate`` -> ``[{index, score, text?}]``, best first;
- v2 ``/infer`` with BYTES ``query`` [1] and ``text`` [n] -> FP32 ``score`` [n] in input order
  (``model.py`` hands such requests here).

Scores are the sigmoid of the model's logit (sentence-transformers' CrossEncoder default) unless
``raw_scores`` is set.
"""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapserve.http.gate import inference
from snapserve import metadata, metrics, tensors
from snapserve.errors import ServingError, json_object

RERANK_V2 = "rerank-v2"  # a Job's form for v2 pair requests


def check_served(model) -> None:
    if model.info.task != metadata.RERANK:
        raise ServingError("not_found", f"model {model.name!r} is served as {model.info.task!r}, not as a "
                           "reranker (a one-label *ForSequenceClassification snapshot, or --task rerank)")


def flag(value, name: str, default: bool) -> bool:
    value = default if value is None else getattr(value, "bool_param", value)  # gRPC wraps parameters
    if not isinstance(value, bool):
        raise ServingError("validation", f"'{name}' must be true or false")
    return value


def check_query(model, query) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ServingError("validation", "'query' must be a non-empty string")
    if len(query) > model.settings.max_text_chars:
        raise ServingError("payload_too_large", f"the query has {len(query)} characters; the limit is "
                           f"{model.settings.max_text_chars}")
    return query


async def pairs(model, query, documents, truncate) -> list[np.ndarray]:
    """Validated (query, document) pairs as token sequences with their segment ids."""
    check_served(model)
    query = check_query(model, query)
    documents = model.validate_texts(documents)  # 400 / 413 as for embeddings
    if not flag(truncate, "truncate", True):
        lengths = model.encoder.untruncated_pair_lengths(query, documents)
        for i, n in enumerate(lengths):
            if n > model.encoder.max_length:
                raise ServingError("unprocessable", f"document {i} with the query is {n} tokens; this model takes "
                                   f"at most {model.encoder.max_length} (send truncate: true to cut the document)")
    model.refuse_if_full(len(documents))
    with metrics.TOKENIZE.time():
        if len(documents) > 16:  # big requests tokenise off the event loop (Rust, parallel)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, model.encoder.encode_pairs, query, documents)
        return model.encoder.encode_pairs(query, documents)


async def score(model, query, documents, headers, truncate=True) -> tuple[np.ndarray, int]:
    """-> (one raw logit per document [n], tokens of all pairs)."""
    from transformer.model import V1, Job, traced

    job = Job(V1, await pairs(model, query, documents, truncate), **traced(headers))
    job = await model.predict(job, headers)
    metrics.SEQUENCES.labels("transformer").inc(len(job.sequences))
    return logits_of(job), job.tokens


def logits_of(job) -> np.ndarray:
    return np.asarray([vector[0] for vector, _ in job.rows], dtype=np.float32)


def ranked(scores: np.ndarray, top_n=None) -> list[int]:
    """Indices best first (ties keep input order); ``top_n`` keeps the first ones."""
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise ServingError("validation", "'top_n' must be a positive integer")
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return order[:top_n] if top_n is not None else order


def document_texts(documents) -> list:
    """Cohere and Jina accept a document as a string or as ``{"text": ...}``."""
    if not isinstance(documents, list):
        return documents  # validate_texts names the problem
    return [d["text"] if isinstance(d, dict) and isinstance(d.get("text"), str) else d for d in documents]


# -- v2 -----------------------------------------------------------------------------------------
async def v2_job(model, request, headers):
    """A v2 request with BYTES ``query`` [1] and ``text`` [n] -> a Job of pairs."""
    from transformer.model import Job, traced

    inputs = {i.name: i for i in request.inputs}
    if "text" not in inputs:
        raise ServingError("validation", "a rerank request needs BYTES inputs 'query' [1] and 'text' [n]")
    query = tensors.texts(inputs["query"])
    if len(query) != 1:
        raise ServingError("validation", f"input 'query' must hold one text (shape [1]), got {len(query)}")
    params = request.parameters or {}
    raw = flag(params.get("raw_scores"), "raw_scores", False)
    job = Job(RERANK_V2, await pairs(model, query[0], tensors.texts(inputs["text"]), params.get("truncate")),
              binary=request.from_grpc or flag(params.get("binary_data_output"), "binary_data_output", False),
              **traced(headers))
    job.options["raw_scores"] = raw
    if request.id:
        job.request_id = request.id
    return job


def v2_response(model, job):
    import uuid

    from kserve import InferOutput, InferResponse

    scores = logits_of(job)
    if not job.options.get("raw_scores"):
        scores = tensors.sigmoid(scores)
    out = InferOutput(name="score", shape=[len(scores)], datatype="FP32")
    out.set_data_from_numpy(scores, binary_data=job.binary)
    metrics.SEQUENCES.labels("transformer").inc(len(scores))
    from transformer.model import token_parameters

    return InferResponse(response_id=job.request_id or uuid.uuid4().hex, model_name=model.name,
                         infer_outputs=[out], use_binary_outputs=job.binary,
                         parameters=token_parameters([len(s) for s in job.sequences]))


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
        scores, tokens = await score(model, body.get("query"), documents, dict(request.headers),
                                     body.get("truncate", True))
        probabilities = tensors.sigmoid(scores)
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
        scores, _ = await score(model, body.get("query"), body["texts"], dict(request.headers),
                                body.get("truncate", True))
        shown = scores if raw else tensors.sigmoid(scores)
        answer = []
        for i in ranked(shown):
            item = {"index": i, "score": float(shown[i])}
            if return_text:
                item["text"] = body["texts"][i]
            answer.append(item)
        return json_response(answer)

    api.add_api_route("/v1/rerank", inference(cohere), methods=["POST"])
    api.add_api_route("/rerank", inference(tei), methods=["POST"])
    return api
