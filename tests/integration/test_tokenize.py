"""TEI-style /tokenize and /decode on the transformer, with the default model's tokenizer."""

from __future__ import annotations

import httpx
import pytest

TEXT = "Hello, Kubernetes world! Rerank these documents."


def post(servers, path, body):
    return httpx.post(f"{servers.transformer_url}{path}", json=body, timeout=30)


def test_tokenize_gives_ids_and_offsets_and_decode_round_trips(servers):
    r = post(servers, "/tokenize", {"inputs": [TEXT, "short"]})
    assert r.status_code == 200, r.text
    tokens, short = r.json()
    assert tokens[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[-1]["text"] == "[SEP]" and tokens[-1]["special"]
    for token in tokens[1:-1]:
        assert TEXT[token["start"]:token["stop"]] == token["text"] and not token["special"]
    assert len(short) == 3
    plain = post(servers, "/tokenize", {"inputs": TEXT, "add_special_tokens": False}).json()[0]
    assert [t["id"] for t in plain] == [t["id"] for t in tokens[1:-1]]
    ids = [t["id"] for t in tokens]
    decoded = post(servers, "/decode", {"ids": ids}).json()
    assert decoded == [TEXT.lower()]  # an uncased wordpiece tokenizer
    again = post(servers, "/tokenize", {"inputs": decoded[0], "add_special_tokens": True}).json()[0]
    assert [t["id"] for t in again] == ids
    both = post(servers, "/decode", {"ids": [ids, ids[:3]], "skip_special_tokens": False}).json()
    assert both[0].startswith("[CLS]") and len(both) == 2


def test_token_counts_agree_with_the_openai_usage(servers):
    texts = ["one two three", TEXT]
    counted = sum(len(t) for t in post(servers, "/tokenize", {"inputs": texts}).json())
    usage = httpx.post(f"{servers.transformer_url}/openai/v1/embeddings",
                       json={"model": "snap", "input": texts}).json()["usage"]
    assert usage["prompt_tokens"] == counted


@pytest.mark.parametrize("path,body,status", [
    ("/tokenize", {}, 400), ("/tokenize", {"inputs": 5}, 400), ("/tokenize", {"inputs": []}, 400),
    ("/tokenize", {"inputs": "x", "add_special_tokens": "yes"}, 400),
    ("/tokenize", {"inputs": ["x"] * 5000}, 413), ("/tokenize", {"inputs": "x", "prompt_name": "nope"}, 400),
    ("/decode", {}, 400), ("/decode", {"ids": []}, 400), ("/decode", {"ids": [-1]}, 400),
    ("/decode", {"ids": [10 ** 9]}, 400), ("/decode", {"ids": ["a"]}, 400), ("/decode", {"ids": [[1], "x"]}, 400),
    ("/decode", {"ids": [True]}, 400), ("/decode", {"ids": [[1]] * 5000}, 413),
])
def test_bad_requests_get_their_4xx(servers, path, body, status):
    r = post(servers, path, body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error", "error_type"}
