"""The torch engine and its heads: pooling, the device/dtype choice, the GPU path's knobs on CPU."""

from __future__ import annotations

import pytest
import torch

from predictor import device
from predictor.encoder import engine, heads
from snapserve import metadata
from snapserve.metadata import Pooling
from snapserve.tokenizer import TextEncoder


def test_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool_values(hidden, mask, "mean") == [2.0, 2.0]
    assert pool_values(hidden, mask, "cls") == [1.0, 1.0]
    assert pool_values(hidden, mask, "max") == [3.0, 3.0]
    normed = heads.pool(hidden, mask, Pooling("mean", True))
    assert torch.allclose(normed.norm(dim=1), torch.tensor([1.0]))


def pool_values(hidden, mask, mode):
    return heads.pool(hidden, mask, Pooling(mode, False))[0].tolist()


def test_dtype_auto_picks_bf16_then_fp16_on_cuda_and_fp32_on_cpu(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.resolve_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.resolve_dtype("auto", cuda) is torch.float16
    assert device.resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert device.resolve_dtype("float16", torch.device("cpu")) is torch.float16


def test_cuda_requested_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(engine.SnapshotInvalid, match="no CUDA device"):
        device.resolve_device("cuda")
    assert device.resolve_device("auto").type == "cpu"


def test_reduced_precision_and_instances_on_cpu_match_fp32(model_dir):
    """The GPU path's knobs (bf16, several instances) exercised on the CPU."""
    import numpy as np

    seqs = TextEncoder(model_dir, metadata.read(model_dir)).encode(["A man is playing a guitar.",
                                                                    "The stock market fell."])
    fp32 = engine.load(model_dir, device="cpu", dtype="float32")
    bf16 = engine.load(model_dir, device="cpu", dtype="bfloat16", instances=2)
    about = fp32.describe()
    assert about.pop("threads") >= 1
    assert about == {"engine": "torch", "device": "cpu", "dtype": "float32", "width": 384, "task": "embedding"}
    a = fp32.execute(fp32.prepare(seqs))
    b0 = bf16.execute(bf16.prepare(seqs), 0)
    b1 = bf16.execute(bf16.prepare(seqs), 1)
    assert a.shape == b0.shape == (2, 384)
    assert np.allclose(b0, b1)
    assert (a * b0).sum(axis=1).min() > 0.99


def test_cpu_thread_budget_flag_then_omp_num_threads_then_cores():
    assert device.threads_per_instance(4, 2, {}) == 2
    assert device.threads_per_instance(0, 1, {"OMP_NUM_THREADS": "1"}) == 1
    assert device.threads_per_instance(3, 1, {"OMP_NUM_THREADS": "1"}) == 3  # the flag wins
    assert device.threads_per_instance(0, 1, {"OMP_NUM_THREADS": "junk"}) == len(__import__("os").sched_getaffinity(0))
    assert device.threads_per_instance(1, 4, {}) == 1
