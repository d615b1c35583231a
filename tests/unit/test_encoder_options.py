"""Rerank task detection, pair tokenisation, Matryoshka dimensions and prompts (no server, no torch)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from snapserve import metadata, tensors, tokenizer
from snapserve.errors import ServingError
from transformer import encoding_options


def test_a_one_label_sequence_classifier_is_a_reranker():
    clf = {"architectures": ["XLMRobertaForSequenceClassification"]}
    assert metadata.detect_task({**clf, "id2label": {"0": "LABEL_0"}}) == "rerank"
    assert metadata.detect_task({**clf, "id2label": {"0": "neg", "1": "pos"}}) == "classification"
    assert metadata.detect_task({**clf, "id2label": {"0": "LABEL_0"}}, "classification") == "classification"
    assert metadata.detect_task({"architectures": ["BertModel"]}, "rerank") == "rerank"


def test_rerank_info_has_one_label_and_width_one(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"],
                                                      "id2label": {"0": "LABEL_0"}, "hidden_size": 32,
                                                      "type_vocab_size": 2}))
    info = metadata.read(tmp_path)
    assert (info.task, info.labels, info.width, info.type_vocab_size) == ("rerank", ("LABEL_0",), 1, 2)


def test_prompts_and_matryoshka_widths_are_read_from_sentence_transformers_config(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    assert (metadata.read(tmp_path).prompts, metadata.read(tmp_path).matryoshka_dims) == ({}, ())
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({
        "prompts": {"query": "query: ", "passage": "passage: ", "bad": 3}, "default_prompt_name": "query",
        "matryoshka_dims": [8, 2, 4, "x", 0]}))
    info = metadata.read(tmp_path)
    assert info.prompts == {"query": "query: ", "passage": "passage: "}
    assert (info.default_prompt_name, info.matryoshka_dims) == ("query", (2, 4, 8))


def test_pairs_cut_only_the_document_and_carry_segment_ids(model_dir):
    encoder = tokenizer.TextEncoder(model_dir, metadata.read(model_dir, max_length_override=16))
    query = "what is the capital of france"
    q_ids = encoder.tokenizer.encode(query, add_special_tokens=False).ids
    short, long = encoder.encode_pairs(query, ["paris", "word " * 100])
    assert isinstance(long, tokenizer.Segmented) and len(long) == 16
    assert long[1:1 + len(q_ids)].tolist() == q_ids and long.type_ids[: len(q_ids) + 2].tolist() == [0] * (len(q_ids) + 2)
    assert set(long.type_ids[len(q_ids) + 2:].tolist()) == {1}
    assert encoder.untruncated_pair_lengths(query, ["word " * 100])[0] > 16
    assert len(encoder.encode(["word " * 100])[0]) == 16  # single texts keep their own truncation
    with pytest.raises(ServingError, match="query") as exc:
        encoder.encode_pairs("word " * 40, ["x"])
    assert exc.value.status == 422
    plain = encoder.encode(["hi"])[0]
    types_ = tokenizer.pad_type_ids([short, plain])
    assert types_.shape == (2, len(short)) and types_[1].tolist() == [0] * len(short)
    assert types_[0].tolist() == short.type_ids.tolist()
    assert tokenizer.pad_type_ids([plain]) is None
    ids, mask = tokenizer.pad([short, plain])
    assert ids[0].tolist() == short.tolist() and mask[1].sum() == len(plain)


def test_sigmoid_is_stable_for_large_logits():
    out = tensors.sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert out.tolist() == [0.0, 0.5, 1.0] and out.dtype == np.float32


def fake_model(width=8, dims=(), max_dimensions=0, settings_dims=(), prompts=None, default=None, task="embedding"):
    info = types.SimpleNamespace(width=width, matryoshka_dims=dims, task=task, prompts=prompts or {},
                                 default_prompt_name=default)
    settings = types.SimpleNamespace(max_dimensions=max_dimensions, matryoshka_dims=settings_dims)
    return types.SimpleNamespace(info=info, settings=settings)


def test_dimensions_are_checked_against_the_width_and_declared_widths():
    model = fake_model()
    assert encoding_options.dimensions(model, None) is None
    assert encoding_options.dimensions(model, 8) is None  # the full vector: nothing to do
    assert encoding_options.dimensions(model, 3) == 3
    for bad in (0, -1, 9, 2.5, "4", True):
        with pytest.raises(ServingError) as exc:
            encoding_options.dimensions(model, bad)
        assert exc.value.status == 400
    with pytest.raises(ServingError, match="between 1 and 4"):
        encoding_options.dimensions(fake_model(max_dimensions=4), 6)
    declared = fake_model(dims=(2, 4))
    assert encoding_options.dimensions(declared, 4) == 4
    with pytest.raises(ServingError, match="one of 2, 4"):
        encoding_options.dimensions(declared, 3)
    assert encoding_options.dimensions(fake_model(dims=(2, 4), settings_dims=(3,)), 3) == 3  # the flag wins
    with pytest.raises(ServingError, match="applies to embeddings"):
        encoding_options.dimensions(fake_model(task="rerank"), 1)


def test_truncate_renormalises_the_prefix():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(3, 8)).astype(np.float32)
    cut = encoding_options.truncate(full, 4)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    prefix = full[:, :4] / np.linalg.norm(full[:, :4], axis=1, keepdims=True)
    np.testing.assert_allclose((cut * prefix).sum(axis=1), 1.0, atol=1e-6)
    assert encoding_options.truncate(full, None) is full


def test_prompts_by_name_default_and_unknown():
    model = fake_model(prompts={"query": "query: ", "doc": "passage: "}, default="query")
    assert encoding_options.prompt(model, None) == "query: "
    assert encoding_options.prompt(model, "doc") == "passage: "
    assert encoding_options.prompted({"prompt": "query: "}, ["a"]) == ["query: a"]
    with pytest.raises(ServingError, match="known: doc, query"):
        encoding_options.prompt(model, "nope")
    with pytest.raises(ServingError, match="declares no prompts"):
        encoding_options.prompt(fake_model(), "query")


def test_grpc_parameters_are_unwrapped():
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import InferParameter

    assert encoding_options.plain(InferParameter(int64_param=5)) == 5
    assert encoding_options.plain(InferParameter(string_param="query")) == "query"
    assert encoding_options.plain(7) == 7
