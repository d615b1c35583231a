"""The engines in-process: each engine x dtype's forward pass at a few batch shapes, and its cosine
to torch fp32 on fixed sentences. ``loadtest.bench`` runs it as a subprocess (loadtest imports none
of our packages) for its engines table.

    python -m tools.bench_engines --model_dir models/all-MiniLM-L6-v2 [--seconds 2] [--device cpu]

Prints one JSON object on its last line. ``--compare onnx,onnx-fused,onnx-int8`` instead compares the
export's ONNX graphs (issue 24): each one's cosine to torch fp32 over the fixed texts
(tools/quality_texts.txt, min and mean) and its sentences/s at 1 x 16 tokens, 16 x 16 and 64 of those
texts (mixed lengths, padded to the longest), the graphs taking turns shape by shape, ``--rounds`` times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHAPES = ((1, 16), (32, 24), (128, 32))  # the table: batch x tokens
VARIANTS = (("torch", "float32", "none"), ("torch", "bfloat16", "none"), ("torch", "float16", "none"),
            ("onnx", "float32", "none"), ("onnx-fused", "float32", "none"), ("onnx", "float32", "int8"))
MIXED = "mixed"  # 64 of the fixed texts as they tokenise: mixed lengths in one padded batch
COMPARE_SHAPES = ((1, 16), (16, 16), (64, MIXED))


def sentences_per_s(eng, batch: int, length: int, seconds: float, sequences=None) -> dict:
    sequences = sequences or [np.full(length, 1000 + i % 50, dtype=np.int64) for i in range(batch)]
    prepared = eng.prepare(sequences)
    eng.execute(prepared)
    done, started, fastest = 0, time.perf_counter(), float("inf")
    while (elapsed := time.perf_counter() - started) < seconds or done == 0:
        before = time.perf_counter()
        eng.execute(prepared)
        fastest = min(fastest, time.perf_counter() - before)
        done += 1
    # best_*: the fastest pass, what the engine does when nothing else takes the cores (other load only adds time)
    return {"batch": batch, "tokens": length, "sentences_per_s": round(done * batch / elapsed, 1),
            "ms": round(elapsed / done * 1e3, 2), "best_sentences_per_s": round(batch / fastest, 1),
            "best_ms": round(fastest * 1e3, 2)}


def main(argv: list[str] | None = None) -> int:
    from predictor.encoder import engine, precision

    p = argparse.ArgumentParser(prog="python -m tools.bench_engines", description=__doc__.splitlines()[0])
    p.add_argument("--model_dir", type=Path, required=True)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--seconds", type=float, default=2.0, help="per shape")
    p.add_argument("--shapes", default=",".join(f"{b}x{n}" for b, n in SHAPES), help="BATCHxTOKENS,...")
    p.add_argument("--compare", default="", help="engine names (onnx,onnx-fused,onnx-int8): cosines over the fixed "
                   "texts and speeds at 1x16, 16x16, 64 x mixed, interleaved")
    p.add_argument("--rounds", type=int, default=2, help="with --compare: how many times each graph is timed")
    a = p.parse_args(argv)
    if a.compare:
        print(json.dumps(compare(a.model_dir, a.device, a.compare.split(","), a.seconds, a.rounds)))
        return 0
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


def compare(model_dir: Path, device: str, names: list[str], seconds: float, rounds: int) -> dict:
    """The engines ``names``: cosine to torch fp32 over the fixed texts, and sentences/s at COMPARE_SHAPES,
    the engines taking turns at each shape in each round (a burst of other load slows them alike)."""
    from predictor.encoder import engine, precision
    from snapserve import tokenizer
    from tools import onnx_variants

    reference = engine.load(model_dir, device=device, engine="torch", dtype="float32")
    texts = onnx_variants.texts()
    seqs = tokenizer.TextEncoder(model_dir, reference.info).encode(texts)

    def rows(eng):
        return np.concatenate([eng.execute(eng.prepare(seqs[i:i + 16])) for i in range(0, len(seqs), 16)])

    expected, out = rows(reference), {"device": device, "texts": len(texts), "engines": {}, "rounds": []}
    engines = {}
    for name in names:
        try:
            engines[name] = engine.load(model_dir, device=device, engine=name)
        except Exception as exc:  # noqa: BLE001 - a graph the snapshot lacks is a line, not a failed bench
            out["engines"][name] = {"error": str(exc).splitlines()[0][:160]}
            continue
        cos = precision.cosine(expected, rows(engines[name]))
        out["engines"][name] = {"dtype": engines[name].describe()["dtype"], "cosine_min": round(float(cos.min()), 6),
                                "cosine_mean": round(float(cos.mean()), 6)}
    mixed = seqs[:64]
    out["mixed_tokens"] = [min(len(s) for s in mixed), max(len(s) for s in mixed)]
    for rnd in range(rounds):
        for batch, length in COMPARE_SHAPES:
            for name, eng in engines.items():
                got = sentences_per_s(eng, batch, 0 if length == MIXED else length, seconds,
                                      mixed if length == MIXED else None)
                out["rounds"].append({"round": rnd + 1, "engine": name, **got, "tokens": length})
    for line in compare_lines(out):
        print(line)
    return out


def compare_lines(out: dict) -> list[str]:
    lines = [f"cosine to torch fp32 over {out['texts']} fixed texts (min / mean):"]
    for name, about in out["engines"].items():
        lines.append(f"  {name:<12} " + (f"unavailable: {about['error']}" if "error" in about else
                                        f"{about['dtype']:<8} {about['cosine_min']:.6f} / {about['cosine_mean']:.6f}"))
    lines.append(f"sentences/s in-process ({out['device']}; mixed: {out['mixed_tokens'][0]}-{out['mixed_tokens'][1]} "
                 "tokens, padded to the longest):")
    for r in out["rounds"]:
        lines.append(f"  round {r['round']} {r['batch']:>3} x {r['tokens']!s:<6} {r['engine']:<12} "
                     f"{r['sentences_per_s']:>8.1f}/s ({r['ms']:.1f} ms a pass); fastest pass "
                     f"{r['best_sentences_per_s']:>8.1f}/s ({r['best_ms']:.1f} ms)")
    return lines


def _int8_rows(model_dir: Path, device: str, probe) -> np.ndarray:
    """int8's rows although its quality check refused it (the table shows why)."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic

    from predictor.encoder import onnx as engine_onnx
    from snapserve import tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "int8.onnx"
        gated = Path(model_dir) / engine_onnx.INT8_FILE
        if gated.is_file():  # the export's int8, refused by this CPU's start-up check
            out = gated
        else:  # what --quantize int8 quantises at start
            quantize_dynamic(str(Path(model_dir) / engine_onnx.FILE), str(out), **engine_onnx.int8_options())
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        ids, mask = tokenizer.pad(probe)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]


if __name__ == "__main__":
    raise SystemExit(main())
