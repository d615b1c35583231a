"""What the snapshot says, read once with one rule (torch-free): task, labels, pooling, pad id, length."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from snapserve import metadata
from snapserve.metadata import Pooling, SnapshotInvalid
from snapserve.tokenizer import TextEncoder, pad, unpad


def test_default_model_reads_as_a_normalised_mean_pooled_embedding(model_dir):
    info = metadata.read(model_dir)
    assert info.pooling == Pooling("mean", True)
    assert (info.task, info.width, info.max_length, info.pad_id, info.vocab_size) == ("embedding", 384, 256, 0, 30522)
    assert metadata.read(model_dir, max_length_override=64).max_length == 64


def test_cls_pooling_and_no_modules(tmp_path: Path):
    assert metadata.pooling(tmp_path) == Pooling("mean", False)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"type": "sentence_transformers.models.Transformer", "path": ""},
        {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]))
    assert metadata.pooling(tmp_path) == Pooling("cls", False)


def test_task_detection_and_labels():
    assert metadata.detect_task({"architectures": ["BertModel"]}) == "embedding"
    assert metadata.detect_task({"architectures": ["BertForSequenceClassification"]}) == "classification"
    assert metadata.detect_task({"architectures": ["BertModel"]}, "classification") == "classification"
    assert metadata.labels({"id2label": {"0": "neg", "1": "pos"}}) == ("neg", "pos")
    with pytest.raises(SnapshotInvalid, match="--task"):
        metadata.detect_task({}, "summarise")


def test_one_pad_rule_for_both_servers(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"pad_token_id": 1, "hidden_size": 8}))
    assert metadata.read(tmp_path).pad_id == 1
    (tmp_path / "config.json").write_text(json.dumps({"pad_token_id": None, "hidden_size": 8}))
    assert metadata.read(tmp_path).pad_id == 0


def test_missing_or_broken_folders_say_what_is_wrong(tmp_path: Path):
    with pytest.raises(SnapshotInvalid, match="does not exist"):
        metadata.read(tmp_path / "nope")
    with pytest.raises(SnapshotInvalid, match=r"config\.json is missing"):
        metadata.read(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(SnapshotInvalid, match="not valid JSON"):
        metadata.read(tmp_path)


def test_pad_and_unpad_round_trip():
    seqs = [np.array([5, 6, 7]), np.array([8])]
    ids, mask = pad(seqs)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert [s.tolist() for s in unpad(ids, mask)] == [[5, 6, 7], [8]]


def test_encoder_truncates_to_the_metadata_length(model_dir):
    encoder = TextEncoder(model_dir, metadata.read(model_dir, max_length_override=8))
    assert len(encoder.encode(["word " * 50])[0]) == 8
    assert encoder.untruncated_lengths(["word " * 50])[0] > 8
