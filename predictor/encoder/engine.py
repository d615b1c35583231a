"""The engine seam: a model on its device behind four calls, so the batcher and the kserve model
know nothing of torch (and later engines, e.g. ONNX Runtime, slot in beside ``TorchEngine``).

An engine loads a snapshot and exposes ``prepare(sequences)`` (tensors built on a CPU thread),
``execute(prepared, instance)`` (one forward pass, one float32 row per sequence), ``warmup(...)``
and ``describe()`` (device, dtype, width, task). The task head turns outputs into rows.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from predictor import device as devices  # first: it sets OMP_WAIT_POLICY before torch loads libgomp
import torch

from predictor import heap
from predictor.encoder import heads, split as engine_split
from snapserve import metadata, tokenizer
from snapserve.metadata import ModelInfo, SnapshotInvalid

log = logging.getLogger("snapserve.predictor")


class Engine(Protocol):
    info: ModelInfo

    def prepare(self, sequences: list[np.ndarray]) -> Any: ...
    def execute(self, prepared: Any, instance: int = 0) -> np.ndarray: ...
    def warmup(self, instance: int, max_length: int, max_batch_size: int) -> None: ...
    def describe(self) -> dict: ...
    def gpu_memory(self) -> tuple[int, int]: ...


class TorchEngine:
    """transformers' model in eager torch; the weights are loaded once and shared by every instance:
    each has its own CUDA stream on a GPU, its share of the CPU threads otherwise."""

    def __init__(self, model_dir: Path, info: ModelInfo, device: str = "auto", dtype: str = "auto",
                 instances: int = 1, cpu_threads: int = 0, compile: bool = False, cpu_bf16: bool = True):
        import transformers

        self.model_dir = Path(model_dir)
        self.info = info
        devices.check_weights(self.model_dir)
        self.device = devices.resolve_device(device)
        self.dtype = devices.resolve_dtype(dtype, self.device)
        self.head = heads.for_task(info)
        cls = getattr(transformers, self.head.auto_class)
        try:
            model = cls.from_pretrained(self.model_dir, local_files_only=True, use_safetensors=True, dtype=self.dtype)
        except Exception as exc:  # one clear line, not a half-ready pod
            raise SnapshotInvalid(f"weights in {self.model_dir} do not load: {exc}".splitlines()[0]) from exc
        self.model = model.to(self.device).eval()
        self.instances = instances
        if self.device.type == "cuda":
            self.streams = [torch.cuda.Stream(self.device) for _ in range(instances)]
        else:
            from predictor.encoder import precision

            log.info("oneDNN kernel caches (bf16 matmuls): %s", precision.bound_kernel_caches())
            # OpenMP teams are per calling thread: N concurrent executions split the budget
            torch.set_num_threads(devices.threads_per_instance(cpu_threads, instances))
            self.streams = [None] * instances
        # on a CPU the activations of every new batch shape fragment glibc's heap: trimmed now and then
        self.trimmer = heap.HeapTrimmer() if self.device.type == "cpu" else None
        self.forward, self.buckets = self.model, ()
        if dtype == "auto" and self.device.type == "cpu" and cpu_bf16:
            from predictor.encoder import precision

            precision.torch_cpu(self)  # bf16 where the CPU has it and the outputs pass
        if compile:
            from predictor.encoder import compiled

            self.buckets = compiled.buckets(info.max_length)
            self.forward = compiled.compile_model(self.model, self.buckets)

    def describe(self) -> dict:
        about = {"engine": "torch", "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                 "width": self.info.width, "task": self.info.task}
        if self.device.type == "cpu":
            about["threads"] = torch.get_num_threads()
        if self.buckets:
            about["compiled"] = "buckets " + ",".join(map(str, self.buckets))
        return about

    def prepare(self, sequences: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
        ids, mask = tokenizer.pad(sequences, self.info.pad_id)
        types = tokenizer.pad_type_ids(sequences)  # only when the batch holds (query, document) pairs
        tensors = [torch.from_numpy(a) for a in (ids, mask, types) if a is not None]
        if self.buckets:
            from predictor.encoder import compiled

            tensors = compiled.pad_to_bucket(tensors, self.buckets, self.info.pad_id)
        if self.device.type == "cuda":
            tensors = [t.pin_memory() for t in tensors]
        return tuple(tensors)

    def execute(self, prepared: tuple[torch.Tensor, ...], instance: int = 0) -> np.ndarray:
        ids, mask, *types = prepared
        stream = self.streams[instance]
        with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            ids = ids.to(self.device, non_blocking=True)
            mask = mask.to(self.device, non_blocking=True)
            extra = {"token_type_ids": types[0].to(self.device, non_blocking=True)} if types else {}
            rows = self.head(self.forward(input_ids=ids, attention_mask=mask, **extra), mask).cpu().numpy()
        if self.trimmer is not None:
            self.trimmer.after_batch()
        return rows

    def warmup(self, instance: int, max_length: int, max_batch_size: int) -> None:
        """Run the shapes traffic will use once, so the first request pays no compile/alloc cost.

        On a GPU that means the kernels and allocator pools for small, batched and longest inputs;
        a CPU has nothing to warm but the code path, and a short pass keeps restarts fast."""
        shapes = ((1, 8), (min(32, max_batch_size), min(128, max_length)), (1, max_length))
        if self.device.type != "cuda":
            shapes = ((1, 8),)
        if self.buckets:  # every graph before ready: batch 1 and batch >= 2 of each length bucket
            shapes = tuple((size, length) for length in self.buckets for size in (1, 2))
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


def load(model_dir: Path, task: str = "auto", device: str = "auto", dtype: str = "auto", instances: int = 1,
         cpu_threads: int = 0, max_length: int = 0, engine: str = "torch", compile: bool = False,
         quantize: str = "none", cpu_bf16: bool = True, cache=None) -> Engine:
    """The engine for the snapshot in ``model_dir``: torch, ONNX Runtime (``model.onnx``, written by
    ``python -m tools.export_onnx``), or with ``auto`` whichever measures faster here (or measured
    faster at an earlier start on this machine: ``cache``, predictor/encoder/tuning_cache.py)."""
    info = metadata.read(model_dir, task, max_length)
    known = cache.get("engine") if engine == "auto" and cache is not None else None
    split = engine_split.parse(known) if isinstance(known, str) else None
    if known in ("torch", "onnx") or split:
        def one(name: str):
            return load(model_dir, task, device, dtype, instances, cpu_threads, max_length, name, compile, quantize,
                        cpu_bf16)

        picked = engine_split.SplitEngine(one(split[0]), one(split[1]), split[2]) if split else one(known)
        log.info("engine auto: %s (measured faster at an earlier start, %s)", known, cache.path)
        return picked
    if engine == "torch" and quantize != "none":
        raise SnapshotInvalid(f"--quantize {quantize} needs --engine onnx (or auto)")
    if engine == "onnx" and (compile or dtype not in ("auto", "float32")):
        raise SnapshotInvalid("--engine onnx runs float32 (or --quantize int8); --dtype and --compile are torch's")
    if engine == "onnx" or quantize != "none":
        from predictor.encoder import onnx as engine_onnx

        return engine_onnx.OnnxEngine(model_dir, info, device, instances, cpu_threads, quantize)
    torch_engine = TorchEngine(model_dir, info, device, dtype, instances, cpu_threads, compile, cpu_bf16)
    if engine == "torch" or compile or dtype not in ("auto", "float32"):
        return torch_engine
    from predictor.encoder import onnx as engine_onnx

    picked = engine_onnx.fastest(torch_engine, model_dir, info, instances, cpu_threads)
    if cache is not None:
        cache.put("engine", picked.describe()["engine"])
    return picked
