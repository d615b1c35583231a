"""Pooling and task detection from the snapshot's files; the device/dtype choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from predictor import engine, tasks
from predictor.encoding import pad, unpad


def test_default_model_declares_mean_pooling_and_normalize(model_dir):
    assert tasks.read_pooling(model_dir) == tasks.Pooling("mean", True)


def test_cls_pooling_and_no_modules(tmp_path: Path):
    assert tasks.read_pooling(tmp_path) == tasks.Pooling("mean", False)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"type": "sentence_transformers.models.Transformer", "path": ""},
        {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]))
    assert tasks.read_pooling(tmp_path) == tasks.Pooling("cls", False)


def test_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool_values(hidden, mask, "mean") == [2.0, 2.0]
    assert pool_values(hidden, mask, "cls") == [1.0, 1.0]
    assert pool_values(hidden, mask, "max") == [3.0, 3.0]
    normed = tasks.pool(hidden, mask, tasks.Pooling("mean", True))
    assert torch.allclose(normed.norm(dim=1), torch.tensor([1.0]))


def pool_values(hidden, mask, mode):
    return tasks.pool(hidden, mask, tasks.Pooling(mode, False))[0].tolist()


def test_task_detection():
    assert tasks.detect_task({"architectures": ["BertModel"]}) == "embedding"
    assert tasks.detect_task({"architectures": ["BertForSequenceClassification"]}) == "classification"
    assert tasks.detect_task({"architectures": ["BertModel"]}, "classification") == "classification"
    assert tasks.labels({"id2label": {"0": "neg", "1": "pos"}}) == ["neg", "pos"]


def test_pad_and_unpad_round_trip():
    import numpy as np

    seqs = [np.array([5, 6, 7]), np.array([8])]
    ids, mask = pad(seqs)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert [s.tolist() for s in unpad(ids, mask)] == [[5, 6, 7], [8]]


def test_dtype_auto_picks_bf16_then_fp16_on_cuda_and_fp32_on_cpu(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert engine.resolve_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert engine.resolve_dtype("auto", cuda) is torch.float16
    assert engine.resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert engine.resolve_dtype("float16", torch.device("cpu")) is torch.float16


def test_cuda_requested_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(engine.SnapshotInvalid, match="no CUDA device"):
        engine.resolve_device("cuda")
    assert engine.resolve_device("auto").type == "cpu"


def test_reduced_precision_and_instances_on_cpu_match_fp32(model_dir):
    """The GPU path's knobs (bf16, several instances) exercised on the CPU."""
    import numpy as np

    from predictor.encoding import TextEncoder

    seqs = TextEncoder(model_dir).encode(["A man is playing a guitar.", "The stock market fell."])
    fp32 = engine.Engine(model_dir, device="cpu", dtype="float32")
    bf16 = engine.Engine(model_dir, device="cpu", dtype="bfloat16", instances=2)
    a = fp32.execute(fp32.prepare(seqs))
    b0 = bf16.execute(bf16.prepare(seqs), 0)
    b1 = bf16.execute(bf16.prepare(seqs), 1)
    assert a.shape == b0.shape == (2, 384)
    assert np.allclose(b0, b1)
    assert (a * b0).sum(axis=1).min() > 0.99
