"""The engines in-process: each engine x dtype's forward pass at a few batch shapes, and its cosine
to torch fp32 on fixed sentences. ``loadtest.bench`` runs it as a subprocess (loadtest imports none
of our packages) for its engines table.

    python -m tools.bench_engines --model_dir models/all-MiniLM-L6-v2 [--seconds 2] [--device cpu]

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHAPES = ((1, 16), (32, 24), (128, 32))  # the table: batch x tokens
VARIANTS = (("torch", "float32", "none"), ("torch", "bfloat16", "none"), ("torch", "float16", "none"),
            ("onnx", "float32", "none"), ("onnx", "float32", "int8"))


def sentences_per_s(eng, batch: int, length: int, seconds: float) -> dict:
    prepared = eng.prepare([np.full(length, 1000 + i % 50, dtype=np.int64) for i in range(batch)])
    eng.execute(prepared)
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or done == 0:
        eng.execute(prepared)
        done += 1
    return {"batch": batch, "tokens": length, "sentences_per_s": round(done * batch / elapsed, 1),
            "ms": round(elapsed / done * 1e3, 2)}


def main(argv: list[str] | None = None) -> int:
    from predictor.encoder import engine, precision

    p = argparse.ArgumentParser(prog="python -m tools.bench_engines", description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", type=Path, required=True)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--seconds", type=float, default=2.0, help="per shape")
    p.add_argument("--shapes", default=",".join(f"{b}x{n}" for b, n in SHAPES), help="BATCHxTOKENS,...")
    a = p.parse_args(argv)
    shapes = [tuple(int(x) for x in s.split("x")) for s in a.shapes.split(",")]
    reference = engine.load(a.model_dir, device=a.device, engine="torch", dtype="float32")
    probe = precision.probe_sequences(a.model_dir, reference.info)
    expected = reference.execute(reference.prepare(probe))
    rows = []
    for name, dtype, quantize in VARIANTS:
        if a.device == "cpu" and dtype == "float16":
            continue  # no fp16 kernels worth timing on a CPU
        label = f"{name} {'int8' if quantize == 'int8' else dtype}"
        try:
            eng = reference if (name, dtype) == ("torch", "float32") else engine.load(
                a.model_dir, device=a.device, engine=name, dtype=dtype, quantize=quantize)
        except Exception as exc:  # noqa: BLE001 - a missing engine is a row, not a failed bench
            rows.append({"variant": label, "error": str(exc).splitlines()[0][:120]})
            continue
        got = eng.describe().get("dtype")
        if quantize == "int8" and got != "int8":
            _, worst = precision.check(expected, _int8_rows(a.model_dir, a.device, probe))
            rows.append({"variant": label, "cosine": round(worst, 6), "refused": True})
            continue
        _, worst = precision.check(expected, eng.execute(eng.prepare(probe)))
        row = {"variant": label, "cosine": round(worst, 6),
               "shapes": [sentences_per_s(eng, b, n, a.seconds) for b, n in shapes]}
        if a.device == "cuda":
            import torch

            row["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
            torch.cuda.reset_peak_memory_stats()
        rows.append(row)
    print(json.dumps({"device": a.device, "rows": rows}))
    return 0


def _int8_rows(model_dir: Path, device: str, probe) -> np.ndarray:
    """int8's rows although its quality check refused it (the table shows why)."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from snapserve import tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(str(Path(model_dir) / "model.onnx"), str(out), weight_type=QuantType.QInt8)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        ids, mask = tokenizer.pad(probe)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]


if __name__ == "__main__":
    raise SystemExit(main())
