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
        # --dtype auto is measured (dtype_race) from the fp32 weights, except under torch.compile (one dtype
        # a graph: bf16/fp16 on a GPU as before) and on a CPU told not to (--cpu_bf16 false)
        race = dtype == "auto" and not compile and (self.device.type == "cuda" or cpu_bf16)
        self.dtype = torch.float32 if race else devices.resolve_dtype(dtype, self.device)
        self.small: tuple[int, Any] | None = None  # (most padded tokens, model) a split dtype race keeps
        self.small_dtype = ""
        self.plan = None  # shapes.ShapePlan once fixed (a GPU, after autotune): batches padded to it
        self.pool = None
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
        if race:
            from predictor.encoder import dtype_race

            dtype_race.run(self)  # fp32 against bf16/fp16 where they run natively and the outputs pass
        if compile:
            from predictor.encoder import compiled

            self.buckets = compiled.buckets(info.max_length)
            self.forward = compiled.compile_model(self.model, self.buckets)

    def describe(self) -> dict:
        dtype = str(self.dtype).removeprefix("torch.")
        if self.small is not None:
            dtype = f"{self.small_dtype}<={self.small[0]}<{dtype}"
        about = {"engine": "torch", "device": str(self.device), "dtype": dtype,
                 "width": self.info.width, "task": self.info.task}
        if self.device.type == "cpu":
            about["threads"] = torch.get_num_threads()
        if self.buckets:
            about["compiled"] = "buckets " + ",".join(map(str, self.buckets))
        if self.plan is not None:
            about["shapes"] = len(self.plan.reachable())
        return about

    def install(self, model, dtype: torch.dtype, small: tuple[int, Any] | None = None, small_dtype: str = "") -> None:
        """The model(s) the dtype race chose: ``small`` = (most padded tokens, model) runs the batches up
        to that size, ``model`` the rest."""
        self.model = self.forward = model
        self.dtype, self.small, self.small_dtype = dtype, small, small_dtype

    def fix_shapes(self, plan, depth: int):
        """Pad every batch to ``plan``'s shapes from now on, in input buffers reused batch after batch
        (pinned on a GPU), ``depth`` of them reserved per shape (batches prepared or running at once);
        returns the plan in force (torch.compile's length buckets replace the plan's)."""
        import dataclasses

        from predictor.encoder import shapes

        if self.buckets:  # torch.compile's length buckets are the graphs it has: pad to those
            plan = dataclasses.replace(plan, lengths=self.buckets)
        pinned = self.device.type == "cuda"
        self.pool = shapes.BufferPool(lambda n: torch.empty(n, dtype=torch.int64, pin_memory=pinned))
        for rows, length in plan.reachable():
            self.pool.reserve(3 * rows * length, depth)
        self.plan = plan
        log.info("batch shapes: %d (sizes %s x lengths %s), %.1f MiB of %s input buffers", len(plan.reachable()),
                 ",".join(map(str, plan.sizes)), ",".join(map(str, plan.lengths)), self.pool.held_bytes() / 2**20,
                 "pinned" if pinned else "host")
        return plan

    def prepare(self, sequences: list[np.ndarray]) -> Prepared:
        types = tokenizer.pad_type_ids(sequences)  # only when the batch holds (query, document) pairs
        if self.plan is not None:
            from predictor.encoder import shapes

            rows, length = self.plan.shape(len(sequences), max(len(s) for s in sequences))
            lease = self.pool.take(3 * rows * length)
            views = shapes.pad_into(lease.buffer, sequences, rows, length, self.info.pad_id, types)
            return Prepared(views, len(sequences), lease)
        ids, mask = tokenizer.pad(sequences, self.info.pad_id)
        tensors = [torch.from_numpy(a) for a in (ids, mask, types) if a is not None]
        if self.buckets:
            from predictor.encoder import compiled

            tensors = compiled.pad_to_bucket(tensors, self.buckets, self.info.pad_id)
        # Not pinned: pin_memory() per batch was a cudaHostAlloc per new size (the fixed shapes above use
        # a pool instead); a copy from pageable memory of a few KiB of ids costs microseconds.
        return Prepared(tensors, len(sequences))

    def execute(self, prepared: Prepared, instance: int = 0) -> np.ndarray:
        small = self.small
        model = small[1] if small is not None and prepared[0].numel() <= small[0] else self.forward
        return self.run(model, prepared, instance)

    def run(self, model, prepared: Prepared, instance: int = 0) -> np.ndarray:
        """One forward of ``model`` (this engine's, or a candidate the dtype race times) on ``prepared``."""
        ids, mask, *types = prepared
        stream = self.streams[instance]
        try:
            with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                ids = ids.to(self.device, non_blocking=True)
                mask = mask.to(self.device, non_blocking=True)
                extra = {"token_type_ids": types[0].to(self.device, non_blocking=True)} if types else {}
                # .cpu() waits for the stream: the copies out of a pooled buffer are done after it
                rows = self.head(model(input_ids=ids, attention_mask=mask, **extra), mask).cpu().numpy()
        except BaseException:
            if stream is not None:
                stream.synchronize()  # a copy may still read the buffer that goes back to the pool below
            raise
        finally:
            if getattr(prepared, "lease", None) is not None:  # a pooled batch runs once
                prepared.lease.release()
        if self.trimmer is not None:
            self.trimmer.after_batch()
        return rows[: prepared.count] if len(rows) != prepared.count else rows

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


class Prepared(tuple):
    """A batch's input tensors ([ids, mask(, types)], padded), the count of real sequences among its rows,
    and the pooled buffer they live in, if any (given back after the forward, or when dropped unrun)."""

    def __new__(cls, tensors, count: int, lease=None):
        self = super().__new__(cls, tensors)
        self.count, self.lease = count, lease
        return self


def load(model_dir: Path, task: str = "auto", device: str = "auto", dtype: str = "auto", instances: int = 1,
         cpu_threads: int = 0, max_length: int = 0, engine: str = "torch", compile: bool = False,
         quantize: str = "none", cpu_bf16: bool = True, cache=None) -> Engine:
    """The engine for the snapshot in ``model_dir``: torch, ONNX Runtime (``model.onnx``, written by
    ``python -m tools.export_onnx``), or with ``auto`` whichever measures faster here (or measured
    faster at an earlier start on this machine: ``cache``, predictor/encoder/tuning_cache.py)."""
    info = metadata.read(model_dir, task, max_length)
    known = cache.get("engine") if engine == "auto" and cache is not None else None
    split = engine_split.parse(known) if isinstance(known, str) else None
    if known in ("torch", "onnx", "onnx-fused", "onnx-int8") or split:
        def one(name: str):
            return load(model_dir, task, device, dtype, instances, cpu_threads, max_length, name, compile, quantize,
                        cpu_bf16)

        picked = engine_split.SplitEngine(one(split[0]), one(split[1]), split[2]) if split else one(known)
        log.info("engine auto: %s (measured faster at an earlier start, %s)", known, cache.path)
        return picked
    if engine == "torch" and quantize == "int8":
        raise SnapshotInvalid(f"--quantize {quantize} needs --engine onnx (or auto)")
    if engine.startswith("onnx") and (compile or dtype not in ("auto", "float32")):
        raise SnapshotInvalid("--engine onnx runs float32 (or --quantize int8); --dtype and --compile are torch's")
    if engine.startswith("onnx") or quantize == "int8":  # onnx-fused, onnx-int8: what the race or the cache named
        from predictor.encoder import onnx as engine_onnx

        return engine_onnx.OnnxEngine(model_dir, info, device, instances, cpu_threads, quantize,
                                      engine if engine.startswith("onnx") else "onnx")
    torch_engine = TorchEngine(model_dir, info, device, dtype, instances, cpu_threads, compile, cpu_bf16)
    if engine == "torch" or compile or dtype not in ("auto", "float32"):
        return torch_engine
    from predictor.encoder import onnx as engine_onnx

    picked = engine_onnx.fastest(torch_engine, model_dir, info, instances, cpu_threads, quantize)
    if cache is not None:
        cache.put("engine", picked.describe()["engine"])
    return picked
