"""ONNX Runtime behind the engine seam: ``model.onnx`` (the backbone and its task head, exported when
the image is built by ``python -m tools.export_onnx``) on the CPU execution provider, or CUDA's
when the installed onnxruntime has it.

On a small CPU ONNX Runtime beats eager torch at batch one (fewer, fused kernels); torch bf16 wins
on large batches where the CPU has bf16. ``fastest`` measures both at warm-up and keeps one.
Dynamic int8 (``--quantize int8``) is quantised at start and kept only if it passes the same
quality check as bf16 (it did not for all-MiniLM-L6-v2: cosine 0.86).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from predictor.encoder import split as engine_split, precision
from predictor.device import threads_per_instance
from snapserve import tokenizer
from snapserve.metadata import ModelInfo, SnapshotInvalid

log = logging.getLogger("snapserve.predictor")

FILE = "model.onnx"
# The shapes ``fastest`` compares the engines on: a single sentence and a full CPU batch.
RACE = ((1, 16), (4, 16), (8, 32), (32, 32))  # 16 to 1,024 tokens: where the winner changes, if it does


def providers(device: str) -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in have:
        raise SnapshotInvalid("--engine onnx --device cuda, but this onnxruntime has no CUDA execution provider "
                              "(install onnxruntime-gpu, or use --engine torch)")
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEngine:
    """One InferenceSession shared by every instance (``run`` is thread-safe); its intra-op pool gets
    the whole CPU budget, which concurrent runs share."""

    def __init__(self, model_dir: Path, info: ModelInfo, device: str = "auto", instances: int = 1,
                 cpu_threads: int = 0, quantize: str = "none"):
        self.model_dir, self.info, self.instances = Path(model_dir), info, instances
        path = self.model_dir / FILE
        if not path.is_file():
            raise SnapshotInvalid(f"no {FILE} in {self.model_dir}: write it with "
                                  f"`python -m tools.export_onnx --src {self.model_dir}` (or use --engine torch)")
        self.providers = providers(device)
        self.threads = threads_per_instance(cpu_threads, 1)
        self.dtype = "float32"
        self.session = self._session(path)
        if quantize == "int8":
            self._int8(path)

    def _session(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Shapes change with every batch: ORT's arena keeps the largest buffers it ever needed and its
        # memory patterns are per shape, so the process grew ~19% over a 60 s soak; plain allocations
        # keep memory flat at a small cost per pass.
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        # Idle intra-op threads sleep instead of spinning: the spinning took the cores the transformer,
        # the HTTP server and the next batch's preparation share with the forward pass (with it off:
        # 32 clients 116-119 -> 159-162 req/s, 8 x 64 sentences 205-230 -> 218-256 sentences/s,
        # 1 client unchanged, on 2 shared cores), as OMP_WAIT_POLICY=PASSIVE does for torch.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), opts, providers=self.providers)
        except Exception as exc:  # one clear line, not a half-ready pod
            raise SnapshotInvalid(f"{path} does not load in onnxruntime: {exc}".splitlines()[0]) from exc
        self.inputs = [i.name for i in session.get_inputs()]
        return session

    def _int8(self, path: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        probe = self.prepare(precision.probe_sequences(self.model_dir, self.info))
        reference = self.execute(probe)
        fp32 = self.session
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
            self.session = self._session(out)  # the session holds the weights; the file may go
        ok, _ = precision.choose(lambda: reference, lambda: self.execute(probe), "onnx dynamic int8")
        if ok:
            self.dtype = "int8"
        else:
            self.session = fp32

    def describe(self) -> dict:
        return {"engine": "onnx", "device": "cuda" if self.providers[0].startswith("CUDA") else "cpu",
                "dtype": self.dtype, "width": self.info.width, "task": self.info.task,
                "provider": self.providers[0], "threads": self.threads}

    def prepare(self, sequences: list[np.ndarray]) -> dict[str, np.ndarray]:
        ids, mask = tokenizer.pad(sequences, self.info.pad_id)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            types = tokenizer.pad_type_ids(sequences)
            feeds["token_type_ids"] = types if types is not None else np.zeros_like(ids)
        return {k: v for k, v in feeds.items() if k in self.inputs}

    def execute(self, prepared: dict[str, np.ndarray], instance: int = 0) -> np.ndarray:
        return self.session.run(None, prepared)[0].astype(np.float32, copy=False)

    def warmup(self, instance: int, max_length: int, max_batch_size: int) -> None:
        started = time.perf_counter()
        self.execute(self.prepare([np.full(8, 100, dtype=np.int64)]), instance)
        log.info("warm-up instance %d (onnx): 1 x 8 tokens in %.1f ms", instance, (time.perf_counter() - started) * 1e3)

    def gpu_memory(self) -> tuple[int, int]:
        if not self.providers[0].startswith("CUDA"):
            return 0, 0
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free, total


def race(engines: dict, shapes=RACE, repeats: int = 5, clock=time.perf_counter) -> dict[str, list[float]]:
    """The fastest of ``repeats`` timings of each engine's ``execute`` at each ``(batch, length)``.

    The engines take turns within each repeat, so a burst of other load on a shared machine slows
    both rather than one; the minimum keeps what the engine can do (other load only adds time)."""
    prepared = {name: [eng.prepare([np.full(length, 100, dtype=np.int64)] * batch) for batch, length in shapes]
                for name, eng in engines.items()}
    for name, eng in engines.items():
        for p in prepared[name]:
            eng.execute(p)
    best = {name: [float("inf")] * len(shapes) for name in engines}
    for _ in range(repeats):
        for i in range(len(shapes)):
            for name, eng in engines.items():
                started = clock()
                eng.execute(prepared[name][i])
                best[name][i] = min(best[name][i], clock() - started)
    return best


def pick(times: dict[str, list[float]], first: str = "torch") -> str:
    """The engine whose times, shape by shape, are the smallest relative to ``first``'s (geometric mean
    of the ratios): each shape counts the same, so the slow large batch cannot outvote the single
    sentence, and one noisy timing moves the result by its ratio, not by its milliseconds."""
    base = times[first]
    score = {name: math.prod(t / b for t, b in zip(ts, base, strict=True)) ** (1 / len(base))
             for name, ts in times.items()}
    return min(score, key=lambda name: (score[name], name != first))


def fastest(torch_engine, model_dir: Path, info: ModelInfo, instances: int, cpu_threads: int):
    """``--engine auto``: torch (its dtype already chosen) or ONNX Runtime fp32, whichever is faster
    over ``RACE`` (``race``, ``pick``); ONNX only where ``model.onnx`` exists and runs on this device."""
    device = torch_engine.describe()["device"]
    if not (Path(model_dir) / FILE).is_file():
        log.info("engine auto: torch (no %s in the snapshot)", FILE)
        return torch_engine
    try:
        onnx = OnnxEngine(model_dir, info, "cuda" if device.startswith("cuda") else "cpu", instances, cpu_threads)
    except (SnapshotInvalid, ImportError) as exc:  # ImportError: an image without onnxruntime
        log.info("engine auto: torch (onnx unusable here: %s)", exc)
        return torch_engine
    ok, worst = precision.check(torch_engine.execute(torch_engine.prepare(precision.probe_sequences(model_dir, info))),
                                onnx.execute(onnx.prepare(precision.probe_sequences(model_dir, info))))
    if not ok:
        log.warning("engine auto: torch (onnx disagrees with torch: cosine %.6f)", worst)
        return torch_engine
    engines = {"torch": torch_engine, "onnx": onnx}
    times = race(engines)
    split = engine_split.split_point(times, RACE)
    picked = engine_split.SplitEngine(engines[split[0]], engines[split[1]], split[2]) if split else \
        engines[pick(times)]
    dtypes = {"torch": torch_engine.describe()["dtype"], "onnx": onnx.dtype}
    log.info("engine auto: %s (%s)", picked.describe()["engine"], "; ".join(
        f"{name} {dtypes[name]}: " + ", ".join(f"{b}x{n} {t * 1e3:.1f} ms" for (b, n), t in zip(RACE, ts, strict=True))
        for name, ts in times.items()))
    return picked
