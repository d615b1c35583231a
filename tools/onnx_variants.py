"""The fused and int8 graphs beside ``model.onnx`` (``python -m tools.export_onnx`` calls ``write``).

Each is measured against the torch fp32 forward over the fixed texts in tools/quality_texts.txt (72
sentences: short, long past the model's window, questions, code, numbers, seven scripts, emoji), in
batches of 16 so rows are padded as served. A graph that fails its threshold is not written (the
reason goes to ``onnx-quality.json`` and the export's output) and an older one of the same name goes.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from predictor.encoder import onnx as engine_onnx, precision
from snapserve import tokenizer

log = logging.getLogger("tools.export_onnx")

TEXTS = Path(__file__).with_name("quality_texts.txt")  # fixed: a gate must mean the same on every export
BATCH = 16
MIN_FUSED_COSINE = 0.9999
# config.json's model_type -> the optimizer's: the BERT-family encoders its "bert" fusions match
FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert", "electra": "bert"}
# 1: ONNX Runtime's basic rewrites only, which hold on any CPU; 2 and 99 may save fusions or layouts for
# this machine's CPU or execution provider, which the serving session applies on its own CPU anyway.
OPT_LEVEL = 1
FUSED_OPS = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu",
             "FastGelu", "Gelu")
TRACE_WARNINGS = (DeprecationWarning, torch.jit.TracerWarning, UserWarning)


def texts() -> list[str]:
    return [line for line in TEXTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(src: Path, wrapped, info, names: list[str], example: tuple, gate: float, tmp: Path) -> dict:
    """Write the fused and int8 graphs of ``src`` that pass their checks, and ``onnx-quality.json``, into
    ``tmp`` (the export lists and moves them); returns the quality file's graphs."""
    import onnxruntime as ort

    src, tmp = Path(src), Path(tmp)
    seqs = tokenizer.TextEncoder(src, info).encode(texts())
    batches = [seqs[i:i + BATCH] for i in range(0, len(seqs), BATCH)]

    def feeds(batch, inputs):
        ids, mask = tokenizer.pad(batch, info.pad_id)
        all_ = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {n: all_[n] for n in inputs}

    with torch.inference_mode():
        reference = np.concatenate([wrapped(*(torch.from_numpy(v) for v in feeds(b, names).values())).numpy()
                                    for b in batches])

    def measure(path: Path) -> dict:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = [i.name for i in session.get_inputs()]
        got = np.concatenate([session.run(None, feeds(b, inputs))[0] for b in batches])
        if got.shape != reference.shape or not np.isfinite(got).all():
            return {"cosine_min": float("nan"), "cosine_mean": float("nan"), "texts": len(seqs)}
        cos = precision.cosine(reference, got)
        return {"cosine_min": round(float(cos.min()), 6), "cosine_mean": round(float(cos.mean()), 6),
                "texts": len(seqs)}

    graphs = {engine_onnx.FILE: {"written": True, **measure(src / engine_onnx.FILE)}}
    fused = tmp / engine_onnx.FUSED_FILE
    about = _fuse(src, wrapped, info, names, example, fused)
    if fused.is_file():
        about.update(measure(fused))
        if not about["cosine_min"] >= MIN_FUSED_COSINE:
            about["why"] = f"cosine {about['cosine_min']} < {MIN_FUSED_COSINE} against torch fp32"
            fused.unlink()
    about["written"] = fused.is_file()
    graphs[engine_onnx.FUSED_FILE] = about
    # int8 from the fused graph when there is one: its attention stays one fp32 kernel
    source = fused if about["written"] else src / engine_onnx.FILE
    graphs[engine_onnx.INT8_FILE] = _int8(source, tmp, measure, gate, [feeds([s], names) for s in seqs[1::2]])
    for name in (engine_onnx.FUSED_FILE, engine_onnx.INT8_FILE):
        if not graphs[name]["written"]:
            log.warning("%s not written: %s", name, graphs[name].get("why"))
    (tmp / engine_onnx.QUALITY_FILE).write_text(json.dumps(
        {"reference": "torch fp32 forward of the same weights", "texts_file": TEXTS.name, "batch": BATCH,
         "graphs": graphs}, indent=1) + "\n")
    return graphs


def _fuse(src: Path, wrapped, info, names: list[str], example: tuple, out: Path) -> dict:
    """ONNX Runtime's transformer optimizer over the TorchScript exporter's graph of eager attention."""
    import transformers
    from onnxruntime.transformers import optimizer

    config = json.loads((src / "config.json").read_text())
    kind = FUSABLE.get(config.get("model_type", ""))
    about = {"opt_level": OPT_LEVEL, "model_type": config.get("model_type")}
    if kind is None:
        return {**about, "why": f"model_type {config.get('model_type')!r} is not a BERT-family encoder the optimizer fuses"}
    eager = getattr(transformers, wrapped.head.auto_class).from_pretrained(
        src, local_files_only=True, use_safetensors=True, dtype=torch.float32, attn_implementation="eager").eval()
    plain = out.with_name("eager.onnx")
    try:
        with warnings.catch_warnings():
            for category in TRACE_WARNINGS:  # the exporter's deprecation notice and tracing notes on fixed shapes
                warnings.simplefilter("ignore", category)
            torch.onnx.export(type(wrapped)(eager, wrapped.head, tuple(names)).eval(), example, str(plain),
                              input_names=names, output_names=["rows"], dynamo=False, opset_version=17,
                              dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
        model = optimizer.optimize_model(str(plain), model_type=kind, num_heads=config.get("num_attention_heads", 0),
                                         hidden_size=config.get("hidden_size", 0), opt_level=OPT_LEVEL, use_gpu=False)
    except Exception as exc:  # noqa: BLE001 - the fused graph is optional: model.onnx still serves
        return {**about, "why": f"the optimizer failed: {exc}".splitlines()[0][:300]}
    finally:
        plain.unlink(missing_ok=True)
    stats = {k: v for k, v in model.get_fused_operator_statistics().items() if v and k in FUSED_OPS}
    about["fused"] = stats
    if not stats:
        return {**about, "why": "the optimizer fused nothing"}
    model.save_model_to_file(str(out))
    return about


def _int8(source: Path, tmp: Path, measure, gate: float, calibration: list[dict]) -> dict:
    """Dynamic int8, else static calibrated on ``calibration``; the first to pass ``gate`` is kept."""
    from onnxruntime import quantization as q

    out = tmp / engine_onnx.INT8_FILE
    about = {"gate": gate, "from": source.name, "tried": {}}
    options = engine_onnx.int8_options()

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    methods = {"dynamic, per-channel MatMul weights": lambda path: q.quantize_dynamic(str(source), str(path), **options),
               "static (QDQ, MinMax over half the texts), per-channel MatMul weights":
                   lambda path: q.quantize_static(str(source), str(path), Reader(), quant_format=q.QuantFormat.QDQ,
                                                  activation_type=q.QuantType.QUInt8,
                                                  calibrate_method=q.CalibrationMethod.MinMax, **options)}
    for method, quantize in methods.items():
        path = tmp / f"try-{len(about['tried'])}.onnx"
        logging.disable(logging.WARNING)  # the quantiser's root-logger notes on every tensor it cannot type
        try:
            quantize(path)
            figures = measure(path)
        except Exception as exc:  # noqa: BLE001 - one way failing leaves the next
            about["tried"][method] = {"error": str(exc).splitlines()[0][:300]}
            continue
        finally:
            logging.disable(logging.NOTSET)
        about["tried"][method] = figures
        if figures["cosine_min"] >= gate:
            path.replace(out)
            return {**about, **figures, "method": method, "written": True}
        path.unlink(missing_ok=True)
    best = max((f for f in about["tried"].values() if "cosine_min" in f), key=lambda f: f["cosine_min"], default={})
    return {**about, **best, "written": False,
            "why": f"no int8 kept cosine >= {gate} against fp32 on every text (best min {best.get('cosine_min')})"}
