"""Real servers, real default model: quality, protocol agreement, batching."""

from __future__ import annotations

import asyncio
import re

import httpx
import numpy as np
import pytest

from tests.integration.helpers import SENTENCES, cosine, v1, v2_text


def test_related_sentences_score_higher_than_unrelated(servers):
    vecs = v1(servers.transformer_url, servers.model_name, SENTENCES)
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)  # Normalize module honoured
    related, unrelated = cosine(vecs[0], vecs[1]), cosine(vecs[0], vecs[2])
    assert related > 0.5 > unrelated
    assert related - unrelated > 0.4


def test_matches_sentence_transformers_reference(servers):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(servers.model_dir), device="cpu").encode(SENTENCES)
    ours = v1(servers.transformer_url, servers.model_name, SENTENCES)
    assert cosine(ours, reference).min() >= 0.999


@pytest.mark.parametrize("target", ["transformer", "predictor"])
def test_v1_and_v2_rest_agree(servers, target):
    url = getattr(servers, f"{target}_url")
    a = v1(url, servers.model_name, SENTENCES)
    b = v2_text(url, servers.model_name, SENTENCES)
    assert cosine(a, b).min() >= 0.999


@pytest.mark.parametrize("target", ["transformer", "predictor"])
def test_kserve_rest_and_grpc_clients_agree_with_v1(servers, target):
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

    url = getattr(servers, f"{target}_url")
    grpc_host = getattr(servers, f"{target}_grpc")
    reference = v1(url, servers.model_name, SENTENCES)

    def request():
        item = InferInput(name="text", shape=[len(SENTENCES)], datatype="BYTES")
        item.set_data_from_numpy(np.array([s.encode() for s in SENTENCES], dtype=np.object_), binary_data=False)
        return InferRequest(model_name=servers.model_name, infer_inputs=[item], request_id="t1")

    async def both():
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        grpc = InferenceGRPCClient(grpc_host, timeout=60)
        try:
            r = await rest.infer(url, request(), model_name=servers.model_name)
            g = await grpc.infer(request())
        finally:
            await rest.close()
            await grpc.close()
        return r.outputs[0].as_numpy(), g.outputs[0].as_numpy()

    rest_vecs, grpc_vecs = asyncio.run(both())
    assert rest_vecs.shape == grpc_vecs.shape == (3, 384)
    assert cosine(rest_vecs, reference).min() >= 0.999
    assert cosine(grpc_vecs, reference).min() >= 0.999


def test_openai_sdk_against_the_embeddings_route(servers):
    import openai

    client = openai.OpenAI(base_url=f"{servers.transformer_url}/openai/v1", api_key="unused")
    result = client.embeddings.create(model=servers.model_name, input=SENTENCES)  # SDK asks for base64
    vecs = np.asarray([d.embedding for d in result.data], dtype=np.float32)
    assert [d.index for d in result.data] == [0, 1, 2]
    assert result.usage.prompt_tokens == result.usage.total_tokens > len(SENTENCES)
    reference = v1(servers.transformer_url, servers.model_name, SENTENCES)
    assert cosine(vecs, reference).min() >= 0.999
    single = client.embeddings.create(model=servers.model_name, input="hello", encoding_format="float")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 384
    assert [m.id for m in client.models.list().data] == [servers.model_name]


def batch_sizes(metrics_text: str) -> tuple[float, float, float]:
    """(forward passes, sequences in them, v2 requests the predictor answered)."""
    count = float(re.search(r"^snapserve_batch_size_count (\S+)", metrics_text, re.M).group(1))
    total = float(re.search(r"^snapserve_batch_size_sum (\S+)", metrics_text, re.M).group(1))
    calls = re.search(r'^snapserve_requests_total\{component="predictor",outcome="ok"\} (\S+)', metrics_text, re.M)
    return count, total, float(calls.group(1)) if calls else 0.0


def test_concurrent_single_requests_equal_one_batch_and_are_batched(servers):
    texts = [f"sentence number {i} about {topic}" for i, topic in
             enumerate(["cats", "stocks", "rain", "music"] * 8)]
    before = batch_sizes(httpx.get(f"{servers.predictor_url}/metrics").text)

    async def one_each():
        async with httpx.AsyncClient(timeout=60) as client:
            async def call(text):
                r = await client.post(f"{servers.transformer_url}/v1/models/{servers.model_name}:predict",
                                      json={"instances": [text]})
                assert r.status_code == 200, r.text
                return r.json()["predictions"][0]
            return await asyncio.gather(*(call(t) for t in texts))

    singles = np.asarray(asyncio.run(one_each()), dtype=np.float32)
    after = batch_sizes(httpx.get(f"{servers.predictor_url}/metrics").text)
    batched = v1(servers.transformer_url, servers.model_name, texts)
    assert cosine(singles, batched).min() >= 0.999
    batches, sequences, calls = (a - b for a, b in zip(after, before, strict=True))
    assert sequences == 32
    assert batches < 32, "32 concurrent requests never shared a forward pass"
    assert calls < 32, "the transformer never coalesced concurrent requests into one predictor call"


def test_metrics_are_exported(servers):
    text = httpx.get(f"{servers.predictor_url}/metrics").text
    for name in ("snapserve_requests_total", "snapserve_queue_wait_seconds_bucket", "snapserve_batch_tokens_bucket",
                 "snapserve_batch_padding_ratio_bucket", "snapserve_inference_seconds_bucket",
                 "snapserve_queue_depth", "snapserve_gpu_memory_used_bytes"):
        assert name in text, name
    assert 'snapserve_requests_total{component="transformer",outcome="ok"}' in \
        httpx.get(f"{servers.transformer_url}/metrics").text


def test_the_openai_route_counts_its_sequences(servers):
    def transformer_sequences() -> float:
        text = httpx.get(f"{servers.transformer_url}/metrics").text
        found = re.search(r'^snapserve_sequences_total\{component="transformer"\} (\S+)', text, re.M)
        return float(found.group(1)) if found else 0.0

    before = transformer_sequences()
    r = httpx.post(f"{servers.transformer_url}/openai/v1/embeddings", json={"model": "snap", "input": ["a", "b", "c"]})
    assert r.status_code == 200, r.text
    assert transformer_sequences() - before == 3
