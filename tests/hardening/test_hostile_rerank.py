"""The rerank routes under hostile input and schemathesis, against a real reranker pair (a tiny random
cross-encoder: plumbing, not quality). Every answer is a 4xx from the status table or a correct
ranking; never a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis

from tests import procs
from tests.hardening import test_fuzz
from tests.integration import rerank_snapshot

RERANK, TEI, V2 = "/v1/rerank", "/rerank", "/v2/models/snap/infer"


@pytest.fixture(scope="module")
def reranker(model_dir, tmp_path_factory):
    snap = rerank_snapshot.build(tmp_path_factory.mktemp("hostile-reranker"), model_dir)
    logs = tmp_path_factory.mktemp("hostile-rerank-logs")
    predictor, _ = procs.start_predictor(model_dir=snap, log_dir=logs, extra=["--max_length", "64"])
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_dir=snap, log_dir=logs,
                                                 extra=["--max_length", "64"])
    except Exception:
        predictor.stop()
        raise
    yield transformer.url, predictor.url
    transformer.stop()
    predictor.stop()


def j(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def ids(name, data, shape, datatype="INT64"):
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


CASES = [  # (name, path, body, allowed statuses, server)
    ("10,000 documents", RERANK, j({"query": "q", "documents": ["d"] * 10_000}), (413,), "t"),
    ("10,000 texts (TEI)", TEI, j({"query": "q", "texts": ["d"] * 10_000}), (413,), "t"),
    ("a million-character query", RERANK, j({"query": "a" * 1_000_000, "documents": ["d"]}), (413,), "t"),
    ("a million-character document", TEI, j({"query": "q", "texts": ["a" * 1_000_000]}), (413,), "t"),
    ("a query of 5,000 words", RERANK, j({"query": "word " * 5000, "documents": ["d"]}), (422,), "t"),
    ("documents of 20,000 words", RERANK, j({"query": "q", "documents": ["word " * 20_000] * 3}), (200,), "t"),
    ("empty query", RERANK, j({"query": "", "documents": ["d"]}), (400,), "t"),
    ("query null", TEI, j({"query": None, "texts": ["d"]}), (400,), "t"),
    ("query a list", RERANK, j({"query": ["q"], "documents": ["d"]}), (400,), "t"),
    ("documents objects without text", RERANK, j({"query": "q", "documents": [{"title": "x"}]}), (400,), "t"),
    ("documents nested", RERANK, j({"query": "q", "documents": [["a"]]}), (400,), "t"),
    ("documents deeply nested", RERANK, b'{"query":"q","documents":' + b"[" * 5000 + b"]" * 5000 + b"}",
     (400,), "t"),
    ("invalid UTF-8 in a document", TEI, b'{"query":"q","texts":["\xc3\x28"]}', (400,), "t"),
    ("lone surrogate in the query", RERANK, b'{"query":"\\ud800","documents":["d"]}', (400,), "t"),
    ("top_n huge", RERANK, j({"query": "q", "documents": ["a", "b"], "top_n": 2**80}), (200, 400), "t"),
    ("top_n negative", RERANK, j({"query": "q", "documents": ["a"], "top_n": -1}), (400,), "t"),
    ("top_n a float", RERANK, j({"query": "q", "documents": ["a"], "top_n": 1.5}), (400,), "t"),
    ("raw_scores a string", TEI, j({"query": "q", "texts": ["a"], "raw_scores": "yes"}), (400,), "t"),
    ("truncate a number", TEI, j({"query": "q", "texts": ["a"], "truncate": 0}), (400,), "t"),
    ("Korean and emoji", RERANK, j({"query": "서울의 날씨 🌧️", "documents": ["오늘 비가 옵니다 ☔", "👩‍👩‍👧‍👦" * 40,
                                                                     "a\u0000b\u200b"]}), (200,), "t"),
    ("v2 two queries", V2, j({"inputs": [{"name": "query", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
                                         {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["c"]}]}),
     (400,), "t"),
    ("v2 query without texts", V2, j({"inputs": [{"name": "query", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}),
     (400,), "t"),
    ("v2 query as INT64", V2, j({"inputs": [ids("query", [1], [1]),
                                            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["c"]}]}),
     (400,), "t"),
    ("v2 raw_scores a string", V2, j({"parameters": {"raw_scores": "no"}, "inputs": [
        {"name": "query", "datatype": "BYTES", "shape": [1], "data": ["q"]},
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["c"]}]}), (400,), "t"),
    ("v2 segment ids out of range", V2, j({"inputs": [ids("input_ids", [101, 102], [1, 2]),
                                                      ids("token_type_ids", [0, 7], [1, 2])]}), (400,), "p"),
    ("v2 segment ids negative", V2, j({"inputs": [ids("input_ids", [101, 102], [1, 2]),
                                                  ids("token_type_ids", [0, -1], [1, 2])]}), (400,), "p"),
    ("v2 segment ids of another shape", V2, j({"inputs": [ids("input_ids", [101, 102], [1, 2]),
                                                          ids("token_type_ids", [0], [1, 1])]}), (400,), "p"),
    ("v2 segment ids as FP32", V2, j({"inputs": [ids("input_ids", [101, 102], [1, 2]),
                                                 ids("token_type_ids", [0.0, 1.0], [1, 2], "FP32")]}), (400,), "p"),
    ("v2 segment ids too large for INT64", V2, j({"inputs": [ids("input_ids", [101], [1, 1]),
                                                             ids("token_type_ids", [2**70], [1, 1])]}), (400,), "p"),
]


@pytest.mark.parametrize(("name", "path", "body", "expect", "server"), CASES, ids=[c[0] for c in CASES])
def test_hostile_rerank_request_gets_its_4xx_or_a_ranking(reranker, name, path, body, expect, server):
    base = reranker[0] if server == "t" else reranker[1]
    r = httpx.post(base + path, content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code < 500 and r.status_code in expect, f"{r.status_code}: {r.text[:300]}"
    if r.status_code != 200:
        assert set(r.json()) == {"error", "error_type"} and "Traceback" not in r.text
        return
    results = r.json()["results"]
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


@pytest.mark.parametrize("server", ["transformer", "predictor"])
def test_schemathesis_on_a_reranker_never_5xx(reranker, server):
    base = reranker[0] if server == "transformer" else reranker[1]
    test_fuzz.fuzz(schemathesis.openapi.from_path(str(test_fuzz.OURS)), base, int(60 * test_fuzz.SCALE),
                   f"reranker-{server}")


def test_the_reranker_still_serves(reranker):
    r = httpx.post(reranker[0] + RERANK, json={"query": "still", "documents": ["here", "there"]}, timeout=30)
    assert r.status_code == 200 and len(r.json()["results"]) == 2
