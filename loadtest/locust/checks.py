"""Response-body checks shared by the locustfile and the benchmark: count and dimension of vectors.

Each returns None when the body is right, else a short reason that becomes a locust failure.
"""

from __future__ import annotations

import math


def vectors(rows, n: int, dim: int) -> str | None:
    """``rows`` must be ``n`` vectors of ``dim`` numbers; the first one unit-length (normalised)."""
    if not isinstance(rows, list) or len(rows) != n:
        return f"expected {n} vectors, got {len(rows) if isinstance(rows, list) else type(rows).__name__}"
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != dim:
            return f"vector {i} has dimension {len(row) if isinstance(row, list) else '?'}, expected {dim}"
    norm = math.sqrt(sum(x * x for x in rows[0]))
    if abs(norm - 1.0) > 1e-2:
        return f"vector 0 has norm {norm:.4f}, expected 1"
    return None


def v1(body, n: int, dim: int) -> str | None:
    if not isinstance(body, dict) or "predictions" not in body:
        return "no 'predictions' in v1 response"
    return vectors(body["predictions"], n, dim)


def v2(body, n: int, dim: int) -> str | None:
    try:
        out = body["outputs"][0]
    except (KeyError, IndexError, TypeError):
        return "no 'outputs' in v2 response"
    if list(out.get("shape", [])) != [n, dim]:
        return f"v2 output shape {out.get('shape')}, expected {[n, dim]}"
    data = out.get("data")
    if data and not isinstance(data[0], list):  # kserve flattens row-major
        data = [data[i * dim:(i + 1) * dim] for i in range(len(data) // dim)] if len(data) == n * dim else data
    return vectors(data, n, dim)


def openai(body, n: int, dim: int) -> str | None:
    if not isinstance(body, dict) or body.get("object") != "list":
        return "OpenAI response is not a list object"
    data = body.get("data") or []
    if [d.get("index") for d in data] != list(range(n)):
        return f"OpenAI data indices {[d.get('index') for d in data][:5]}..., expected 0..{n - 1}"
    usage = body.get("usage") or {}
    if not usage.get("prompt_tokens"):
        return "OpenAI response without usage.prompt_tokens"
    return vectors([d.get("embedding") for d in data], n, dim)


def rerank(body, n: int, _dim: int = 0) -> str | None:
    """Cohere-shaped rerank answer: ``n`` results, each index once, scores in [0, 1] best first."""
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or len(results) != n:
        return f"expected {n} rerank results, got {len(results) if isinstance(results, list) else 'none'}"
    if sorted(r.get("index") for r in results) != list(range(n)):
        return "rerank result indices are not each document once"
    scores = [r.get("relevance_score") for r in results]
    if not all(isinstance(s, float | int) and 0 <= s <= 1 for s in scores):
        return "rerank relevance_score outside [0, 1]"
    if scores != sorted(scores, reverse=True):
        return "rerank results are not sorted by relevance_score"
    return None
