"""Reranking through real servers with a tiny randomly initialised cross-encoder (plumbing only: it
checks scores and order against a direct torch forward of the same pairs, never quality)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import procs
from tests.integration import rerank_snapshot

MAX_LENGTH = 48
QUERY = "how do I deploy a reranking model on kubernetes"
DOCS = ["KServe serves models on Kubernetes with an InferenceService.",
        "The stock market fell sharply today.",
        "A cross-encoder scores a query and a document together.",
        "bananas " * 200,  # far past MAX_LENGTH: the document is cut, never the query
        "Helm installs charts into a namespace."]


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory, model_dir) -> Path:
    return rerank_snapshot.build(tmp_path_factory.mktemp("tiny-reranker"), model_dir)


@pytest.fixture(scope="module")
def rerank_servers(tiny_reranker, tmp_path_factory):
    logs = tmp_path_factory.mktemp("rerank-logs")
    limits = ["--max_length", str(MAX_LENGTH)]
    predictor, _ = procs.start_predictor(model_name="rr", model_dir=tiny_reranker, log_dir=logs,
                                         extra=[*limits, "--dtype", "float32"])  # compared at 1e-4
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_name="rr",
                                                 model_dir=tiny_reranker, log_dir=logs,
                                                 extra=[*limits, "--max_texts", "64"])
    except Exception:
        predictor.stop()
        raise
    yield transformer.url, predictor.url
    transformer.stop()
    predictor.stop()


@pytest.fixture(scope="module")
def direct(tiny_reranker):
    """The same pairs through transformers directly: tokenizer pair encoding + one forward."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_reranker)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reranker).eval()

    def logits(query, docs, truncation="only_second"):
        enc = tok([query] * len(docs), docs, truncation=truncation, max_length=MAX_LENGTH, padding=True,
                  return_tensors="pt")
        with torch.no_grad():
            return model(**enc).logits[:, 0].numpy()

    def single(texts):
        enc = tok(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        with torch.no_grad():
            return model(**enc).logits[:, 0].numpy()

    logits.single = single
    logits.tokenizer = tok
    return logits


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def cohere(url, **body):
    return httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS, **body}, timeout=60)


def test_cohere_scores_equal_a_direct_forward_and_top_n_is_in_order(rerank_servers, direct):
    url, _ = rerank_servers
    expected = sigmoid(direct(QUERY, DOCS))
    r = cohere(url, model="rr")
    assert r.status_code == 200, r.text
    answer = r.json()
    results = answer["results"]
    assert sorted(x["index"] for x in results) == list(range(len(DOCS)))
    got = np.array([x["relevance_score"] for x in sorted(results, key=lambda x: x["index"])])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [x["index"] for x in results] == list(np.argsort(-expected, kind="stable"))
    assert all(x["document"] == {"text": DOCS[x["index"]]} for x in results)  # return_documents defaults on
    assert answer["usage"]["total_tokens"] > len(DOCS)
    top = cohere(url, top_n=2, return_documents=False).json()["results"]
    assert [x["index"] for x in top] == [x["index"] for x in results[:2]] and "document" not in top[0]
    objects = cohere(url, documents=[{"text": d} for d in DOCS]).json()["results"]  # Jina/Cohere objects
    assert [x["index"] for x in objects] == [x["index"] for x in results]


def test_tei_cohere_and_v2_forms_agree(rerank_servers, direct):
    url, _ = rerank_servers
    raw = direct(QUERY, DOCS)
    by_cohere = {x["index"]: x["relevance_score"] for x in cohere(url).json()["results"]}
    tei = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}, timeout=60)
    assert tei.status_code == 200, tei.text
    assert [x["index"] for x in tei.json()] == sorted(by_cohere, key=lambda i: -by_cohere[i])
    assert all(x["text"] == DOCS[x["index"]] for x in tei.json())
    for x in tei.json():
        assert x["score"] == pytest.approx(by_cohere[x["index"]], abs=1e-6)
    tei_raw = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}, timeout=60)
    np.testing.assert_allclose([x["score"] for x in sorted(tei_raw.json(), key=lambda x: x["index"])], raw,
                               atol=1e-4)
    body = {"id": "rr-1", "inputs": [
        {"name": "query", "datatype": "BYTES", "shape": [1], "data": [QUERY]},
        {"name": "text", "datatype": "BYTES", "shape": [len(DOCS)], "data": DOCS}]}
    r = httpx.post(f"{url}/v2/models/rr/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert r.json()["id"] == "rr-1" and out["name"] == "score" and out["shape"] == [len(DOCS)]
    np.testing.assert_allclose(out["data"], [by_cohere[i] for i in range(len(DOCS))], atol=1e-6)
    body["parameters"] = {"raw_scores": True}
    raw_v2 = httpx.post(f"{url}/v2/models/rr/infer", json=body, timeout=60).json()["outputs"][0]["data"]
    np.testing.assert_allclose(raw_v2, raw, atol=1e-4)


def test_truncation_cuts_the_document_never_the_query(rerank_servers, direct, tiny_reranker):
    from snapserve import metadata
    from snapserve.tokenizer import TextEncoder

    encoder = TextEncoder(tiny_reranker, metadata.read(tiny_reranker, max_length_override=MAX_LENGTH))
    pair = encoder.encode_pairs(QUERY, [DOCS[3]])[0]
    query_ids = encoder.tokenizer.encode(QUERY, add_special_tokens=False).ids
    assert len(pair) == MAX_LENGTH
    assert pair[1:1 + len(query_ids)].tolist() == query_ids  # [CLS] query [SEP] doc... [SEP]
    assert (pair.type_ids == 1).sum() == MAX_LENGTH - len(query_ids) - 2
    # the server's score for the long document is the only_second pair's, not longest_first's
    url, _ = rerank_servers
    raw = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": [DOCS[3]], "raw_scores": True},
                     timeout=60).json()[0]["score"]
    assert raw == pytest.approx(float(direct(QUERY, [DOCS[3]])[0]), abs=1e-4)
    strict = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": [DOCS[3]], "truncate": False}, timeout=60)
    assert strict.status_code == 422 and "truncate" in strict.json()["error"]
    too_long_query = httpx.post(f"{url}/v1/rerank", json={"query": "word " * 100, "documents": ["x"]}, timeout=60)
    assert too_long_query.status_code == 422 and "query" in too_long_query.json()["error"]


def test_bad_requests_get_their_4xx(rerank_servers):
    url, _ = rerank_servers
    cases = [
        ({"query": "", "documents": ["a"]}, 400), ({"query": "  ", "documents": ["a"]}, 400),
        ({"documents": ["a"]}, 400), ({"query": "q"}, 400), ({"query": "q", "documents": []}, 400),
        ({"query": "q", "documents": "a"}, 400), ({"query": "q", "documents": [1]}, 400),
        ({"query": "q", "documents": ["a"] * 65}, 413), ({"query": "q", "documents": ["a"], "top_n": 0}, 400),
        ({"query": "q", "documents": ["a"], "top_n": "2"}, 400), ({"query": 5, "documents": ["a"]}, 400),
        ({"query": "q", "documents": ["a"], "model": "other"}, 404),
        ({"query": "q", "documents": ["a"], "return_documents": "yes"}, 400),
    ]
    for body, status in cases:
        r = httpx.post(f"{url}/v1/rerank", json=body, timeout=60)
        assert r.status_code == status, (body, r.text)
        assert set(r.json()) == {"error", "error_type"}
    assert httpx.post(f"{url}/rerank", json={"query": "", "texts": ["a"]}).status_code == 400
    assert httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["a"] * 65}).status_code == 413
    two_queries = {"inputs": [{"name": "query", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
                              {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["c"]}]}
    assert httpx.post(f"{url}/v2/models/rr/infer", json=two_queries).status_code == 400


def test_single_texts_still_classify_on_both_servers(rerank_servers, direct):
    texts = ["good", "a bad day"]
    expected = sigmoid(direct.single(texts))
    for url in rerank_servers:
        preds = httpx.post(f"{url}/v1/models/rr:predict", json={"instances": texts}, timeout=60).json()["predictions"]
        assert [p["label"] for p in preds] == ["LABEL_0", "LABEL_0"]
        np.testing.assert_allclose([p["score"] for p in preds], expected, atol=1e-4)
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}]}
        outputs = httpx.post(f"{url}/v2/models/rr/infer", json=body, timeout=60).json()["outputs"]
        probs = np.asarray(outputs[0]["data"]).reshape(outputs[0]["shape"])
        assert outputs[0]["name"] == "probabilities" and probs.shape == (2, 1)
        np.testing.assert_allclose(probs[:, 0], expected, atol=1e-4)


def test_predictor_takes_token_type_ids_and_checks_them(rerank_servers, direct):
    _, purl = rerank_servers
    enc = direct.tokenizer([QUERY] * 2, DOCS[:2], truncation="only_second", max_length=MAX_LENGTH, padding=True,
                           return_tensors="np")

    def v2(types):
        inputs = [{"name": n, "datatype": "INT64", "shape": list(a.shape), "data": a.ravel().tolist()}
                  for n, a in (("input_ids", enc["input_ids"]), ("attention_mask", enc["attention_mask"]),
                               ("token_type_ids", types))]
        return httpx.post(f"{purl}/v2/models/rr/infer", json={"inputs": inputs}, timeout=60)

    outputs = {o["name"]: o for o in v2(enc["token_type_ids"]).json()["outputs"]}
    np.testing.assert_allclose(outputs["logits"]["data"], direct(QUERY, DOCS[:2]), atol=1e-4)
    assert v2(np.full_like(enc["token_type_ids"], 2)).status_code == 400
    assert v2(enc["token_type_ids"][:, :3]).status_code == 400


def test_pairs_and_single_texts_coalesced_together_keep_their_answers(rerank_servers, direct):
    """Concurrent rerank and classification requests share predictor calls (pairs padded beside
    plain texts): each still gets the direct forward's numbers."""
    url, _ = rerank_servers
    expected_pairs = sigmoid(direct(QUERY, DOCS))
    expected_single = sigmoid(direct.single(DOCS[:2]))

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            calls = []
            for _ in range(8):
                calls.append(client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}))
                calls.append(client.post("/v1/models/rr:predict", json={"instances": DOCS[:2]}))
            return await asyncio.gather(*calls)

    for r in asyncio.run(run()):
        assert r.status_code == 200, r.text
        if "results" in r.json():
            got = sorted(r.json()["results"], key=lambda x: x["index"])
            np.testing.assert_allclose([x["relevance_score"] for x in got], expected_pairs, atol=1e-4)
        else:
            np.testing.assert_allclose([p["score"] for p in r.json()["predictions"]], expected_single, atol=1e-4)


def test_metadata_describes_pairs_and_a_metadata_only_client_succeeds(rerank_servers):
    from tests.integration.metadata_client import infer_from_metadata

    url, purl = rerank_servers
    meta, answer = infer_from_metadata(url, "rr")
    assert meta["platform"] == "snapserve:transformer:rerank"
    assert [(i["name"], i["shape"]) for i in meta["inputs"]] == [("query", [1]), ("text", [-1])]
    assert answer["outputs"][0]["name"] == "score"
    assert [int(n) for n in answer["parameters"]["token_counts"].split(",")] and answer["parameters"]["prompt_tokens"]
    pmeta, _ = infer_from_metadata(purl, "rr")
    assert [i["name"] for i in pmeta["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o["name"] for o in pmeta["outputs"]] == ["probabilities", "label", "logits"]


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_reranks_through_v2(rerank_servers, direct, binary):
    import tritonclient.http as httpclient

    url, _ = rerank_servers
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        query = httpclient.InferInput("query", [1], "BYTES")
        query.set_data_from_numpy(np.array([QUERY], dtype=np.object_), binary_data=binary)
        text = httpclient.InferInput("text", [len(DOCS)], "BYTES")
        text.set_data_from_numpy(np.array(DOCS, dtype=np.object_), binary_data=binary)
        result = client.infer("rr", [query, text], outputs=[httpclient.InferRequestedOutput("score", binary_data=binary)])
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("score"), sigmoid(direct(QUERY, DOCS)), atol=1e-4)
