"""The engine seam: a model on its device behind four calls, so the batcher and the kserve model
know nothing of torch (and later engines, e.g. ONNX Runtime, slot in beside ``TorchEngine``).

An engine loads a snapshot and exposes ``prepare(sequences)`` (tensors built on a CPU thread),
``execute(prepared, instance)`` (one forward pass, one float32 row per sequence), ``warmup(...)``
and ``describe()`` (device, dtype, width, task). The task head turns outputs into rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# Before torch loads libgomp (read once, at load): OpenMP threads that spin while they wait starve the
# server's own threads on a small CPU, and one descheduled spinner stalls every barrier; measured on a
# busy 2-core box, 1 x 16 tokens took 250-450 ms spinning and 14 ms passive. The environment still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

from predictor import engine_split, heads, heap
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


def check_weights(model_dir: Path) -> None:
    if not any(Path(model_dir).glob("*.safetensors")):
        raise SnapshotInvalid(f"no *.safetensors weights in {model_dir} (pickle weights are not loaded)")


def threads_per_instance(cpu_threads: int, instances: int, environ=os.environ) -> int:
    """The CPU threads each instance's forward passes get. The budget is ``--cpu_threads`` (the chart
    sets it from the pod's CPU limit, which the process cannot see), else ``OMP_NUM_THREADS`` when
    set (torch.set_num_threads would otherwise override it), else the cores this process may use."""
    return max(1, cpu_budget(cpu_threads, environ) // max(1, instances))


def cpu_budget(cpu_threads: int = 0, environ=os.environ) -> int:
    if cpu_threads:
        return cpu_threads
    omp = environ.get("OMP_NUM_THREADS", "")
    return int(omp) if omp.isdigit() and int(omp) > 0 else len(os.sched_getaffinity(0))


# On a CPU, N single-threaded instances beat one instance of N threads: no OpenMP barrier per operator,
# and one batch's Python and tokenizer work overlaps another's forward. On 2 cores, 2 x 1 against 1 x 2,
# through both servers, with --cpu_bf16 true (same bench run each): 8 clients x 64 sentences 1,024-1,152 -> 1,613-1,702
# sentences/s, 32 clients 378-411 -> 428-437 req/s, 1 client p50 within noise. Capped: past a few,
# each instance's batches only grow slower.
MAX_AUTO_CPU_INSTANCES = 4


def auto_instances(device: str, cpu_threads: int = 0, environ=os.environ) -> int:
    """``--instances auto``: 1 on a GPU; on a CPU one per core of the budget, at most 4."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return 1
    return max(1, min(MAX_AUTO_CPU_INSTANCES, cpu_budget(cpu_threads, environ)))


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


class TorchEngine:
    """transformers' model in eager torch; the weights are loaded once and shared by every instance:
    each has its own CUDA stream on a GPU, its share of the CPU threads otherwise."""

    def __init__(self, model_dir: Path, info: ModelInfo, device: str = "auto", dtype: str = "auto",
                 instances: int = 1, cpu_threads: int = 0, compile: bool = False, cpu_bf16: bool = True):
        import transformers

        self.model_dir = Path(model_dir)
        self.info = info
        check_weights(self.model_dir)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
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
            from predictor import precision

            log.info("oneDNN kernel caches (bf16 matmuls): %s", precision.bound_kernel_caches())
            # OpenMP teams are per calling thread: N concurrent executions split the budget
            torch.set_num_threads(threads_per_instance(cpu_threads, instances))
            self.streams = [None] * instances
        # on a CPU the activations of every new batch shape fragment glibc's heap: trimmed now and then
        self.trimmer = heap.HeapTrimmer() if self.device.type == "cpu" else None
        self.forward, self.buckets = self.model, ()
        if dtype == "auto" and self.device.type == "cpu" and cpu_bf16:
            from predictor import precision

            precision.torch_cpu(self)  # bf16 where the CPU has it and the outputs pass
        if compile:
            from predictor import compiled

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
            from predictor import compiled

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
    ``python -m predictor.export_onnx``), or with ``auto`` whichever measures faster here (or measured
    faster at an earlier start on this machine: ``cache``, predictor/tuning_cache.py)."""
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
        from predictor import engine_onnx

        return engine_onnx.OnnxEngine(model_dir, info, device, instances, cpu_threads, quantize)
    torch_engine = TorchEngine(model_dir, info, device, dtype, instances, cpu_threads, compile, cpu_bf16)
    if engine == "torch" or compile or dtype not in ("auto", "float32"):
        return torch_engine
    from predictor import engine_onnx

    picked = engine_onnx.fastest(torch_engine, model_dir, info, instances, cpu_threads)
    if cache is not None:
        cache.put("engine", picked.describe()["engine"])
    return picked
