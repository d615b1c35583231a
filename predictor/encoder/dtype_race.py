"""``--dtype auto`` for the torch engine: fp32 against the reduced precisions this device runs, measured.

On an H200 eager bf16 took 3.65 ms at 1 x 16 tokens against fp32's 2.56 (a small batch is launch-bound,
and the bf16 kernels launch no fewer), while it wins on large batches; so the choice is made per batch
size, as the engine race does between torch and ONNX Runtime: every candidate that passes the check
against fp32 (precision.MIN_COSINE on the fixed sentences) is timed at ``SHAPES`` (interleaved, the
fastest of a few), and when one dtype wins every shape up to some padded-token count and another every
larger one, both are kept and a batch runs in the one that won its size (split.split_point); otherwise
the one fastest over all shapes (onnx.pick: geometric mean of the ratios to fp32) serves every batch.
A CPU runs the same race with its candidates: bf16 only where it has native bf16 instructions.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

log = logging.getLogger("snapserve.predictor")

FP32 = "float32"
SHAPES = {"cuda": ((1, 16), (8, 16), (32, 32), (128, 32)), "cpu": ((1, 16), (4, 16), (8, 32), (32, 32))}


def candidates(device_type: str) -> list[str]:
    """The reduced precisions worth trying here (fp32 is always the reference)."""
    import torch

    if device_type == "cuda":
        return (["bfloat16"] if torch.cuda.is_bf16_supported() else []) + ["float16"]
    from predictor.encoder import precision

    native, why = precision.cpu_has_bf16()
    if not native:
        log.info("dtype auto on CPU: float32 (%s)", why)
    return ["bfloat16"] if native else []


def choose(times: dict[str, list[float]], shapes: Sequence[tuple[int, int]]) -> tuple[str, str | None, int]:
    """(dtype for small batches, dtype for larger ones or None, most padded tokens the first takes)
    from ``times[dtype][i]`` = seconds at ``shapes[i]``; with one dtype the cut is meaningless (0)."""
    from predictor.encoder import onnx, split

    cut = split.split_point(times, shapes)
    if cut is not None:
        return cut[0], cut[1], cut[2]
    return onnx.pick(times, first=FP32), None, 0


class _Variant:
    """One dtype's model behind the engine's own prepare/execute (what onnx.race times)."""

    def __init__(self, engine, model):
        self.engine, self.model = engine, model

    def prepare(self, sequences):
        return self.engine.prepare(sequences)

    def execute(self, prepared, instance: int = 0):
        return self.engine.run(self.model, prepared, instance)


def run(engine) -> None:
    """Race ``engine.model`` (fp32) against its reduced-precision copies and install the winner(s):
    ``engine.model``/``forward`` (and ``engine.small`` = (max padded tokens, model) for a split)."""
    import torch

    from predictor.encoder import onnx, precision

    kind = engine.device.type
    names = candidates(kind)
    if not names:
        return
    fp32 = engine.model
    probe = engine.prepare(precision.probe_sequences(engine.model_dir, engine.info))
    reference = engine.run(fp32, probe)
    models = {FP32: fp32}
    for name in names:
        model = copy.deepcopy(fp32).to(getattr(torch, name)).eval()
        ok, _ = precision.choose(lambda: reference, lambda m=model: engine.run(m, probe), name)
        if ok:
            models[name] = model
        else:
            del model
    if len(models) > 1:
        shapes = SHAPES[kind]
        times = onnx.race({name: _Variant(engine, m) for name, m in models.items()}, shapes)
        small, large, cut = choose(times, shapes)
    else:
        times, small, large, cut = {}, FP32, None, 0
    engine.install(models[large or small], getattr(torch, large or small),
                   (cut, models[small]) if large else None, small if large else None)
    for name in [n for n in models if n not in (small, large)]:
        del models[name]
    if kind == "cuda":
        torch.cuda.empty_cache()
    log.info("dtype auto on %s: %s (%s)", kind, engine.describe()["dtype"], "; ".join(
        f"{name}: " + ", ".join(f"{b}x{n} {t * 1e3:.2f} ms" for (b, n), t in zip(SHAPES[kind], ts, strict=True))
        for name, ts in times.items()) or "nothing else passed")
