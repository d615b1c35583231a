"""Bad input gets a clear 4xx with {"error", "error_type"}; the servers keep serving."""

from __future__ import annotations

import httpx
import pytest

BAD = [
    ("v1", b"{not json", 400),
    ("v1", b'{"instances": []}', 400),
    ("v1", b'{"instances": [1, 2]}', 400),
    ("v1", b'{"instances": "x", "extra": {}}', 400),
    ("v1", b'{"wrong": ["x"]}', 400),
    ("v2", b'{"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}', 400),
    ("v2", b'{"inputs": [{"name": "other", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}', 400),
    ("openai", b'{"model": "snap", "input": []}', 400),
    ("openai", b'{"model": "snap"}', 400),
    ("openai", b'{"model": "nope", "input": "x"}', 404),
    ("openai", b"[1, 2]", 400),
]


def route(kind: str, model: str) -> str:
    return {"v1": f"/v1/models/{model}:predict", "v2": f"/v2/models/{model}/infer",
            "openai": "/openai/v1/embeddings"}[kind]


@pytest.mark.parametrize(("kind", "body", "status"), BAD)
def test_bad_input_is_a_clear_4xx(servers, kind, body, status):
    r = httpx.post(servers.transformer_url + route(kind, servers.model_name), content=body,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    payload = r.json()
    if kind == "openai":  # OpenAI's shape on the OpenAI routes
        payload = {"error": payload["error"]["message"], "error_type": payload["error"]["type"]}
    assert payload["error"] and payload["error_type"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("body", [b"{not json", b'{"instances": [1]}',
                                  b'{"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 2], '
                                  b'"data": [101, 99999999]}]}'])
def test_predictor_alone_refuses_bad_input(servers, body):
    path = "/v1/models/snap:predict" if b"instances" in body or b"not" in body else "/v2/models/snap/infer"
    r = httpx.post(servers.predictor_url + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error_type"] == "validation"


def test_unknown_model_is_404(servers):
    r = httpx.post(f"{servers.transformer_url}/v1/models/nope:predict", json={"instances": ["x"]})
    assert r.status_code == 404


@pytest.mark.parametrize("target", ["transformer", "predictor"])
def test_json_without_a_json_content_type_still_works(servers, target):
    url = getattr(servers, f"{target}_url")
    r = httpx.post(f"{url}/v1/models/{servers.model_name}:predict", content=b'{"instances": ["hi"]}',
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"][0]) == 384


def test_predictor_refuses_a_request_larger_than_its_queue(tmp_path):
    from tests import procs

    predictor, _ = procs.start_predictor(extra=["--max_queue_sequences", "8"], log_dir=tmp_path)
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), log_dir=tmp_path)
    except Exception:
        predictor.stop()
        raise
    try:
        for url in (predictor.url, transformer.url):  # the predictor's 413 reaches the client as 413
            r = httpx.post(f"{url}/v1/models/snap:predict", json={"instances": ["x"] * 9})
            assert r.status_code == 413, r.text
            assert r.json()["error_type"] == "payload_too_large"
            assert "--max_queue_sequences" in r.json()["error"]
            assert httpx.post(f"{url}/v1/models/snap:predict", json={"instances": ["x"] * 8}).status_code == 200
    finally:
        transformer.stop()
        predictor.stop()
