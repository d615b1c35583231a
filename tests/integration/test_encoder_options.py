"""Matryoshka ``dimensions`` and named prompts through real servers with the default model."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests import procs
from tests.integration.helpers import SENTENCES

PROMPTS = {"query": "query: ", "passage": "passage: "}


def openai(url, **body):
    return httpx.post(f"{url}/openai/v1/embeddings", json={"model": "snap", **body}, timeout=60)


def vectors(answer) -> np.ndarray:
    return np.asarray([d["embedding"] for d in answer["data"]], dtype=np.float32)


def test_dimensions_truncate_and_renormalise_on_every_route(servers):
    url = servers.transformer_url
    full = vectors(openai(url, input=SENTENCES).json())
    r = openai(url, input=SENTENCES, dimensions=64)
    assert r.status_code == 200, r.text
    cut = vectors(r.json())
    assert cut.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    prefix = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose((cut * prefix).sum(axis=1), 1.0, atol=1e-5)
    v1 = httpx.post(f"{url}/v1/models/snap:predict", json={"instances": SENTENCES, "parameters": {"dimensions": 64}})
    np.testing.assert_allclose(np.asarray(v1.json()["predictions"]), cut, atol=1e-5)
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": SENTENCES}],
            "parameters": {"dimensions": 64}}
    out = httpx.post(f"{url}/v2/models/snap/infer", json=body).json()["outputs"][0]
    assert out["shape"] == [3, 64]
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(3, 64), cut, atol=1e-5)
    assert vectors(openai(url, input="x", dimensions=384).json()).shape == (1, 384)


@pytest.mark.parametrize("bad", [0, -3, 385, 10_000, "64", 1.5, True])
def test_bad_dimensions_get_400(servers, bad):
    r = openai(servers.transformer_url, input="hello", dimensions=bad)
    assert r.status_code == 400 and r.json()["error"]["type"] == "validation", r.text
    v1 = httpx.post(f"{servers.transformer_url}/v1/models/snap:predict",
                    json={"instances": ["hello"], "parameters": {"dimensions": bad}})
    assert v1.status_code == 400, v1.text


@pytest.fixture(scope="module")
def prompted(servers, tmp_path_factory):
    """A transformer whose image-style tokenizer export declares prompts and Matryoshka widths."""
    from snapserve import snapshot

    folder = tmp_path_factory.mktemp("prompted")
    files = snapshot.export(servers.model_dir, folder, tokenizer_only=True)
    assert "config_sentence_transformers.json" in files and "modules.json" in files
    st = json.loads((folder / "config_sentence_transformers.json").read_text())
    st.update(prompts=PROMPTS, default_prompt_name=None, matryoshka_dims=[128, 256])
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st))
    server, _ = procs.start_transformer(servers.predictor_url.removeprefix("http://"), model_dir=folder,
                                        log_dir=tmp_path_factory.mktemp("prompted-logs"))
    yield server.url
    server.stop()


def test_prompts_are_prepended_and_counted(servers, prompted):
    plain = openai(prompted, input=SENTENCES[:2]).json()
    query = openai(prompted, input=SENTENCES[:2], prompt_name="query").json()
    by_hand = openai(servers.transformer_url, input=[PROMPTS["query"] + s for s in SENTENCES[:2]]).json()
    np.testing.assert_allclose(vectors(query), vectors(by_hand), atol=1e-5)
    assert (vectors(query) * vectors(plain)).sum(axis=1).max() < 0.9999  # the vector changed
    prompt_tokens = 2  # "query" ":" per text with this tokenizer
    assert query["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"] + 2 * prompt_tokens
    assert query["usage"]["prompt_tokens"] == by_hand["usage"]["prompt_tokens"]
    v1 = httpx.post(f"{prompted}/v1/models/snap:predict",
                    json={"instances": SENTENCES[:2], "parameters": {"prompt_name": "query"}}).json()
    np.testing.assert_allclose(np.asarray(v1["predictions"]), vectors(query), atol=1e-5)
    bad = openai(prompted, input="x", prompt_name="nope")
    assert bad.status_code == 400 and "passage, query" in bad.json()["error"]["message"]
    assert openai(servers.transformer_url, input="x", prompt_name="query").status_code == 400  # none declared


def test_declared_matryoshka_widths_are_the_only_ones_allowed(prompted):
    assert vectors(openai(prompted, input="x", dimensions=128).json()).shape == (1, 128)
    assert vectors(openai(prompted, input="x", dimensions=384).json()).shape == (1, 384)
    r = openai(prompted, input="x", dimensions=64)
    assert r.status_code == 400 and "128, 256" in r.json()["error"]["message"]
