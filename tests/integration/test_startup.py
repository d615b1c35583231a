"""Start-up: a broken snapshot stops the predictor with one clear line; classification plumbing;
the transformer over gRPC."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests import procs
from tests.integration.helpers import SENTENCES, cosine, v1, v2_text


def start_fails(model_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "predictor", "--model_name", "x", "--model_dir", str(model_dir),
         "--http_port", str(procs.free_port()), "--grpc_port", str(procs.free_port())],
        cwd=procs.ROOT, capture_output=True, text=True, timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    return result.stderr


def test_missing_folder_is_named(tmp_path):
    err = start_fails(tmp_path / "nowhere")
    assert "cannot serve: model folder" in err and "nowhere" in err and "does not exist" in err


def test_missing_weights_are_named(tmp_path, model_dir):
    shutil.copy(model_dir / "config.json", tmp_path / "config.json")
    assert "no *.safetensors weights" in start_fails(tmp_path)


def test_corrupt_weights_are_refused(tmp_path, model_dir):
    shutil.copy(model_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(b"not really safetensors")
    assert "do not load" in start_fails(tmp_path)


def test_altered_snapshot_fails_its_manifest(tmp_path, model_dir):
    copy = tmp_path / "snap"
    shutil.copytree(model_dir, copy)
    with (copy / "tokenizer.json").open("r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    err = start_fails(copy)
    assert "tokenizer.json" in err and "does not match" in err


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, model_dir) -> Path:
    """A randomly initialised 2-layer BERT classifier: plumbing only, not model quality."""
    from transformers import BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny-classifier")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=3, id2label={0: "neg", 1: "neutral", 2: "pos"},
                        label2id={"neg": 0, "neutral": 1, "pos": 2})
    BertForSequenceClassification(config).save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(model_dir / name, out / name)
    return out


def test_classification_snapshot_serves_labels_and_scores(tiny_classifier, tmp_path):
    predictor, _ = procs.start_predictor(model_name="clf", model_dir=tiny_classifier, log_dir=tmp_path)
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_name="clf",
                                                 model_dir=tiny_classifier, log_dir=tmp_path)
        try:
            for url in (transformer.url, predictor.url):
                r = httpx.post(f"{url}/v1/models/clf:predict", json={"instances": ["good", "bad day"]})
                assert r.status_code == 200, r.text
                preds = r.json()["predictions"]
                assert len(preds) == 2
                assert all(p["label"] in ("neg", "neutral", "pos") and 0 < p["score"] <= 1 for p in preds)
            body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["good", "bad"]}]}
            outputs = httpx.post(f"{transformer.url}/v2/models/clf/infer", json=body).json()["outputs"]
            probs = np.asarray(outputs[0]["data"]).reshape(outputs[0]["shape"])
            assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
            assert outputs[1]["name"] == "label" and len(outputs[1]["data"]) == 2
        finally:
            transformer.stop()
    finally:
        predictor.stop()


def test_transformer_over_grpc_matches_rest(servers, tmp_path):
    transformer, _ = procs.start_transformer(servers.predictor_grpc, extra=["--predictor_protocol", "grpc-v2"],
                                             log_dir=tmp_path)
    try:
        over_grpc = v1(transformer.url, servers.model_name, SENTENCES)
        assert cosine(over_grpc, v2_text(servers.transformer_url, servers.model_name, SENTENCES)).min() >= 0.999
    finally:
        assert transformer.stop() == 0
