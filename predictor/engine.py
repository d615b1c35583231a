"""The model on its device: loading a snapshot offline, padding batches, forward passes.

``prepare`` builds tensors on a CPU thread (pinned memory on CUDA); ``execute`` runs one batch
on instance ``k``: its own CUDA stream on a GPU, its share of the CPU threads otherwise. The
weights are loaded once and shared by every instance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from predictor import encoding, tasks

log = logging.getLogger("snapserve.predictor")


class SnapshotInvalid(RuntimeError):
    """The model folder cannot be served; the message says what is missing."""


def check_snapshot(model_dir: Path) -> dict:
    """Fail fast with one line naming what is missing; returns config.json."""
    if not model_dir.is_dir():
        raise SnapshotInvalid(f"model folder {model_dir} does not exist (set --model_dir / MODEL_DIR)")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise SnapshotInvalid(f"{config_path} is missing: not a Hugging Face snapshot")
    if not any(model_dir.glob("*.safetensors")):
        raise SnapshotInvalid(f"no *.safetensors weights in {model_dir} (pickle weights are not loaded)")
    try:
        return json.loads(config_path.read_text())
    except ValueError as exc:
        raise SnapshotInvalid(f"{config_path} is not valid JSON ({exc})") from None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SnapshotInvalid("--device cuda but no CUDA device is visible")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, dtype)


class Engine:
    def __init__(self, model_dir: Path, task: str = "auto", device: str = "auto", dtype: str = "auto",
                 instances: int = 1, cpu_threads: int = 0):
        from transformers import AutoModel, AutoModelForSequenceClassification

        self.model_dir = Path(model_dir)
        self.config = check_snapshot(self.model_dir)
        self.task = tasks.detect_task(self.config, task)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.pooling = tasks.read_pooling(self.model_dir)
        self.labels = tasks.labels(self.config) if self.task == tasks.CLASSIFICATION else []
        self.pad_id = self.config.get("pad_token_id") or 0
        cls = AutoModelForSequenceClassification if self.task == tasks.CLASSIFICATION else AutoModel
        try:
            model = cls.from_pretrained(self.model_dir, local_files_only=True, use_safetensors=True,
                                        dtype=self.dtype)
        except Exception as exc:  # one clear line, not a half-ready pod
            raise SnapshotInvalid(f"weights in {self.model_dir} do not load: {exc}".splitlines()[0]) from exc
        self.model = model.to(self.device).eval()
        self.instances = instances
        if self.device.type == "cuda":
            self.streams = [torch.cuda.Stream(self.device) for _ in range(instances)]
        else:
            # OpenMP teams are per calling thread: N concurrent executions split the cores (or the
            # --cpu_threads budget, e.g. the pod's CPU limit, which os.cpu_count() does not see)
            torch.set_num_threads(max(1, (cpu_threads or os.cpu_count() or 1) // instances))
            self.streams = [None] * instances

    @property
    def width(self) -> int:
        return len(self.labels) if self.task == tasks.CLASSIFICATION else int(self.config.get("hidden_size", 0))

    def prepare(self, sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = encoding.pad(sequences, self.pad_id)
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        if self.device.type == "cuda":
            ids_t, mask_t = ids_t.pin_memory(), mask_t.pin_memory()
        return ids_t, mask_t

    def execute(self, prepared: tuple[torch.Tensor, torch.Tensor], instance: int = 0) -> np.ndarray:
        ids, mask = prepared
        stream = self.streams[instance]
        with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            ids = ids.to(self.device, non_blocking=True)
            mask = mask.to(self.device, non_blocking=True)
            out = self.model(input_ids=ids, attention_mask=mask)
            if self.task == tasks.CLASSIFICATION:
                result = torch.softmax(out.logits.float(), dim=-1)
            else:
                result = tasks.pool(out.last_hidden_state, mask, self.pooling)
            rows = result.cpu().numpy()
        return rows

    def warmup(self, instance: int, max_length: int, max_batch_size: int) -> None:
        """Run the shapes traffic will use once, so the first request pays no compile/alloc cost.

        On a GPU that means the kernels and allocator pools for small, batched and longest inputs;
        a CPU has nothing to warm but the code path, and a short pass keeps restarts fast."""
        shapes = ((1, 8), (min(32, max_batch_size), min(128, max_length)), (1, max_length))
        if self.device.type != "cuda":
            shapes = ((1, 8),)
        for size, length in shapes:
            started = time.perf_counter()
            seqs = [np.full(length, 100, dtype=np.int64)] * size
            self.execute(self.prepare(seqs), instance)
            log.info("warm-up instance %d: %d x %d tokens in %.1f ms", instance, size, length,
                     (time.perf_counter() - started) * 1e3)

    def gpu_memory(self) -> tuple[int, int]:
        if self.device.type != "cuda":
            return 0, 0
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free, total

