"""v2 model metadata that clients can use, and Triton's own client (PyPI ``tritonclient``) against
both servers over HTTP (binary tensors and JSON-only bodies) and gRPC."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.integration.helpers import SENTENCES, cosine, v1
from tests.integration.metadata_client import infer_from_metadata


def test_metadata_describes_the_real_tensors(servers):
    t = httpx.get(f"{servers.transformer_url}/v2/models/snap").json()
    assert t.pop("versions", None) is None  # kserve has no model versions
    assert t == {"name": "snap", "platform": "snapserve:transformer:embedding",
                 "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                 "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]}
    p = httpx.get(f"{servers.predictor_url}/v2/models/snap").json()
    assert p["platform"] == "snapserve:predictor:embedding"
    assert p["inputs"] == [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                           {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]}]
    assert p["outputs"] == t["outputs"]


@pytest.mark.parametrize("target", ["transformer", "predictor"])
def test_a_client_that_reads_only_the_metadata_succeeds(servers, target):
    infer_from_metadata(getattr(servers, f"{target}_url"), servers.model_name)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_against_the_transformer(servers, binary):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(servers.transformer_url.removeprefix("http://"))
    try:
        meta = client.get_model_metadata("snap")
        assert meta["inputs"][0]["name"] == "text"
        text = httpclient.InferInput("text", [len(SENTENCES)], "BYTES")
        text.set_data_from_numpy(np.array(SENTENCES, dtype=np.object_), binary_data=binary)
        out = httpclient.InferRequestedOutput("embedding", binary_data=binary)
        result = client.infer("snap", [text], outputs=[out], request_id="triton-1")
    finally:
        client.close()
    vecs = result.as_numpy("embedding")
    assert vecs.shape == (3, 384) and result.get_response()["id"] == "triton-1"
    assert cosine(vecs, v1(servers.transformer_url, "snap", SENTENCES)).min() >= 0.999


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_against_the_predictor_with_token_ids(servers, binary):
    import tritonclient.http as httpclient

    from snapserve import metadata
    from snapserve.tokenizer import TextEncoder

    encoder = TextEncoder(servers.model_dir, metadata.read(servers.model_dir))
    ids, mask = encoder.pad(encoder.encode(SENTENCES))
    client = httpclient.InferenceServerClient(servers.predictor_url.removeprefix("http://"))
    try:
        inputs = []
        for name, array in (("input_ids", ids), ("attention_mask", mask)):
            item = httpclient.InferInput(name, list(array.shape), "INT64")
            item.set_data_from_numpy(array, binary_data=binary)
            inputs.append(item)
        result = client.infer("snap", inputs, outputs=[httpclient.InferRequestedOutput("embedding", binary_data=binary)])
    finally:
        client.close()
    assert cosine(result.as_numpy("embedding"), v1(servers.predictor_url, "snap", SENTENCES)).min() >= 0.999


@pytest.mark.parametrize("target", ["transformer", "predictor"])
def test_tritonclient_grpc_against_both_servers(servers, target):
    """tritonclient's gRPC stubs cannot share an interpreter with kserve's: they run in their own."""
    import json
    import subprocess
    import sys

    from tests import procs

    run = subprocess.run([sys.executable, "-m", "tests.integration.triton_grpc_probe", getattr(servers, f"{target}_grpc"),
                          "snap", *SENTENCES], cwd=procs.ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    answer = json.loads(run.stdout)
    assert answer["metadata"]["platform"] == f"snapserve:{target}:embedding"
    assert answer["metadata"]["outputs"][0]["name"] == "embedding" and answer["id"] == "g-1"
    vecs = np.asarray(answer["output"], dtype=np.float32)
    assert vecs.shape == (3, 384)
    assert cosine(vecs, v1(getattr(servers, f"{target}_url"), "snap", SENTENCES)).min() >= 0.999


@pytest.mark.parametrize("target", ["transformer", "predictor"])
def test_a_json_body_without_content_type_or_header_length_is_json(servers, target):
    body = b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["hello"]}]}'
    r = httpx.post(f"{getattr(servers, f'{target}_url')}/v2/models/snap/infer", content=body,
                   headers={"content-type": ""}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 384]


def test_v1_and_v2_answers_carry_token_counts(servers):
    url = servers.transformer_url
    from snapserve import metadata
    from snapserve.tokenizer import TextEncoder

    expected = [len(s) for s in TextEncoder(servers.model_dir, metadata.read(servers.model_dir)).encode(SENTENCES)]
    answer = httpx.post(f"{url}/v1/models/snap:predict", json={"instances": SENTENCES}).json()
    assert answer["parameters"] == {"token_counts": expected, "prompt_tokens": sum(expected)}
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": SENTENCES}]}
    params = httpx.post(f"{url}/v2/models/snap/infer", json=body).json()["parameters"]
    assert [int(n) for n in params["token_counts"].split(",")] == expected
    assert params["prompt_tokens"] == sum(expected)
