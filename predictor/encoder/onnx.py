"""ONNX Runtime behind the engine seam: ``model.onnx`` (the backbone and its task head, exported when
the image is built by ``python -m tools.export_onnx``) on the CPU execution provider, or CUDA's
when the installed onnxruntime has it.

On a small CPU ONNX Runtime beats eager torch at batch one (fewer, fused kernels); torch bf16 wins
on large batches where the CPU has bf16. ``fastest`` measures them at warm-up and keeps one.

The export may write two more graphs beside ``model.onnx``, each its own candidate in the race:
``model.fused.onnx`` (``onnx-fused``: ONNX Runtime's transformer optimizer fused attention, the
skip/embedding LayerNorms and bias-GELU; checked at cosine >= 0.9999) and ``model.int8.onnx``
(``onnx-int8``: MatMuls in int8, written only when it kept cosine >= 0.995 against fp32 on a fixed set
of texts; the figure is in ``onnx-quality.json`` and logged at start). ``--quantize none`` keeps int8
out of the race; ``--quantize int8`` serves it (quantised at start behind the same check when the
snapshot has no ``model.int8.onnx``).
"""

from __future__ import annotations

import json
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
FUSED_FILE = "model.fused.onnx"
INT8_FILE = "model.int8.onnx"
QUALITY_FILE = "onnx-quality.json"  # what the export measured of each graph (python -m tools.export_onnx)
# the engine names the race and the tuning cache use -> the graph each runs
GRAPHS = {"onnx": FILE, "onnx-fused": FUSED_FILE, "onnx-int8": INT8_FILE}
MIN_INT8_COSINE = 0.995  # int8 moves every row a little: its own gate, looser than bf16's 0.999
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
                 cpu_threads: int = 0, quantize: str = "none", graph: str = "onnx"):
        self.model_dir, self.info, self.instances = Path(model_dir), info, instances
        self.name = graph
        path = self.model_dir / GRAPHS[graph]
        if not path.is_file():
            raise SnapshotInvalid(f"no {path.name} in {self.model_dir}: write it with "
                                  f"`python -m tools.export_onnx --src {self.model_dir}` (or use --engine torch)")
        self.providers = providers(device)
        self.threads = threads_per_instance(cpu_threads, 1)
        self.dtype = "int8" if graph == "onnx-int8" else "float32"
        self.session = self._session(path)
        if quantize == "int8" and graph == "onnx":
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
        """``--quantize int8``: the export's ``model.int8.onnx`` (gated on 72 texts) or, without one, dynamic
        int8 quantised now; either is kept only if it passes the start-up check on this CPU."""
        from onnxruntime.quantization import quantize_dynamic

        probe = self.prepare(precision.probe_sequences(self.model_dir, self.info))
        reference = self.execute(probe)
        fp32, gated = self.session, self.model_dir / INT8_FILE
        if gated.is_file():
            self.session, name = self._session(gated), f"onnx int8 ({INT8_FILE}, gated at export)"
        else:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / INT8_FILE
                quantize_dynamic(str(path), str(out), **int8_options())
                self.session, name = self._session(out), "onnx dynamic int8"  # the session holds the weights
        ok, _ = precision.choose(lambda: reference, lambda: self.execute(probe), name, MIN_INT8_COSINE)
        if ok:
            self.dtype = "int8"
            self.name = "onnx-int8" if gated.is_file() else self.name
        else:
            self.session = fp32

    def describe(self) -> dict:
        return {"engine": self.name, "device": "cuda" if self.providers[0].startswith("CUDA") else "cpu",
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


def int8_options() -> dict:
    """How MatMuls become int8 (``quantize_dynamic``/``quantize_static`` keywords): weights per output
    channel, only MatMuls, so the embeddings (Gather), the LayerNorms and the pooling stay fp32."""
    from onnxruntime.quantization import QuantType

    # DefaultTensorType: the fused graph's contrib ops (Attention, SkipLayerNormalization) defeat ONNX's
    # shape inference, and the quantiser needs each MatMul output's type; they are all float32
    return {"per_channel": True, "op_types_to_quantize": ["MatMul"], "weight_type": QuantType.QInt8,
            "extra_options": {"DefaultTensorType": 1}}


def quality(model_dir: Path) -> dict:
    """What the export measured of each graph (``onnx-quality.json``), or {} when it wrote none."""
    try:
        return json.loads((Path(model_dir) / QUALITY_FILE).read_text()).get("graphs", {})
    except (OSError, ValueError, AttributeError):
        return {}


def candidates(model_dir: Path, quantize: str = "auto") -> list[str]:
    """The ONNX graphs ``--engine auto`` races beside torch: each file the snapshot has, int8 only when
    the export recorded its gate passed and ``--quantize`` is not ``none``."""
    model_dir = Path(model_dir)
    names = [name for name, file in GRAPHS.items() if (model_dir / file).is_file()]
    if "onnx-int8" in names:
        gate = quality(model_dir).get(INT8_FILE, {})
        if quantize == "none" or not gate.get("written") or not gate.get("cosine_min", 0) >= MIN_INT8_COSINE:
            names.remove("onnx-int8")
    return names


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


def fastest(torch_engine, model_dir: Path, info: ModelInfo, instances: int, cpu_threads: int,
            quantize: str = "auto"):
    """``--engine auto``: torch (its dtype already chosen) or one of the snapshot's ONNX graphs
    (``candidates``: fp32, fused, int8), whichever is faster over ``RACE`` (``race``, ``pick``); a graph
    runs only where it loads on this device and agrees with torch on the probe."""
    device = torch_engine.describe()["device"]
    names = candidates(model_dir, quantize)
    if not names:
        log.info("engine auto: torch (no %s in the snapshot)", FILE)
        return torch_engine
    measured = quality(model_dir)
    for file, about in measured.items():
        if "cosine_min" in about:
            log.info("onnx export quality: %s against fp32 on %s texts: cosine min %.6f, mean %.6f%s", file,
                     about.get("texts", "?"), about["cosine_min"], about.get("cosine_mean", float("nan")),
                     "" if about.get("written", True) else f" (gate {about.get('gate')}: not written)")
    reference = torch_engine.execute(torch_engine.prepare(precision.probe_sequences(model_dir, info)))
    engines = {"torch": torch_engine}
    for name in names:
        try:
            eng = OnnxEngine(model_dir, info, "cuda" if device.startswith("cuda") else "cpu", instances, cpu_threads,
                             graph=name)
        except (SnapshotInvalid, ImportError) as exc:  # ImportError: an image without onnxruntime
            log.info("engine race: without %s (unusable here: %s)", name, exc)
            continue
        # each graph against torch on this CPU: int8's kernels differ by instruction set (VNNI or not)
        ok, worst = precision.check(reference, eng.execute(eng.prepare(precision.probe_sequences(model_dir, info))),
                                    MIN_INT8_COSINE if eng.dtype == "int8" else precision.MIN_COSINE)
        if ok:
            engines[name] = eng
        else:
            log.warning("engine race: without %s (disagrees with torch: cosine %.6f)", name, worst)
    if len(engines) == 1:
        log.info("engine auto: torch (no ONNX graph of %s runs here and agrees with it)", ", ".join(names))
        return torch_engine
    times = race(engines)
    split = engine_split.split_point(times, RACE)
    picked = engine_split.SplitEngine(engines[split[0]], engines[split[1]], split[2]) if split else \
        engines[pick(times)]
    log.info("engine auto: %s (%s)", picked.describe()["engine"], "; ".join(
        f"{name} {engines[name].describe()['dtype']}: " + ", ".join(
            f"{b}x{n} {t * 1e3:.1f} ms" for (b, n), t in zip(RACE, ts, strict=True))
        for name, ts in times.items()))
    return picked
