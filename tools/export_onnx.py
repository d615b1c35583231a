"""Write ``model.onnx`` into a snapshot folder, so the ONNX engine converts nothing at pod start.

    python -m tools.export_onnx --src models/all-MiniLM-L6-v2

The graph is the backbone and its task head (pooling and normalisation for embeddings, softmax for
classification): one row per sequence out, as ``TorchEngine.execute`` returns. Batch and sequence
axes are dynamic. The export is checked against torch fp32 on fixed sentences (cosine >= 0.9999)
before it is kept, and the snapshot's SHA-256 manifest is rewritten to list it. A causal LM (task
``generate``) has no such graph: its engine runs torch, so the tool says so in one line, writes nothing
and succeeds (the predictor image's build runs it on every snapshot).

Beside it, for BERT-family encoders, two more candidates for the engine race (predictor/encoder/onnx.py):

- ``model.fused.onnx``: ONNX Runtime's transformer optimizer fuses attention, the embedding and skip
  LayerNorms and bias-GELU. It matches the TorchScript exporter's graph of eager attention (the dynamo
  graph above fuses only bias-GELU), so that graph is exported for it. ``opt_level`` 1 (ONNX Runtime's
  basic, hardware-independent rewrites) keeps the file portable: 2 and 99 may save kernels or layouts
  for this CPU or execution provider, and the serving session applies those on its own CPU anyway.
  Kept at cosine >= 0.9999 against torch fp32 over the fixed texts (tools/quality_texts.txt); the
  steps are in tools/onnx_variants.py.
- ``model.int8.onnx``: the MatMuls in int8, weights per channel (embeddings, LayerNorms and pooling stay
  fp32): dynamic quantisation first, else static with activation ranges calibrated on half of the texts.
  Written only when it keeps cosine >= 0.995 against fp32 on every one of the texts.

What was measured (each graph's min and mean cosine, the gate, why a graph was not written) goes to
``onnx-quality.json``, listed in the manifest; the predictor logs it at start.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from predictor.encoder import heads, onnx as engine_onnx, precision
from snapserve import metadata, snapshot
from snapserve.metadata import SnapshotInvalid

FILE = engine_onnx.FILE
FUSED, INT8, QUALITY = engine_onnx.FUSED_FILE, engine_onnx.INT8_FILE, engine_onnx.QUALITY_FILE
MIN_COSINE = 0.9999
MIN_INT8_COSINE = engine_onnx.MIN_INT8_COSINE

# What the exporter says on every successful export of these models, none of it actionable here: no
# torchvision (we export no vision ops), pytree's deprecation notice, and that dynamic axes named
# alike for each input collapse into one name each. Errors still raise; other warnings still show.
QUIET_LOGGERS = ("torch.onnx._internal.exporter._registration",)
QUIET_WARNINGS = ((FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
                  (UserWarning, r"# The axis name: .* will not be used"))


class WithHead(torch.nn.Module):
    """The backbone plus the head, as one module with tensor inputs (what the exporter traces)."""

    def __init__(self, model, head, names: tuple[str, ...]):
        super().__init__()
        self.model, self.head, self.names = model, head, names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.head(self.model(input_ids=input_ids, attention_mask=attention_mask, **extra), attention_mask)


def skip_reason(src: Path) -> str | None:
    """Why ``src`` gets no ``model.onnx`` (a causal LM), or None."""
    info = metadata.read(src, "auto", 0)
    if info.task == metadata.GENERATE:
        return (f"{src} is a causal LM (task {metadata.GENERATE}); its engine runs torch, so no {FILE} is "
                "exported and nothing is written")
    return None


def export(src: Path, opset: int | None = None, variants: bool = True,
           int8_gate: float = MIN_INT8_COSINE) -> dict:
    """Export, check and list ``src/model.onnx`` and, with ``variants``, the fused and int8 graphs;
    returns what was measured."""
    import onnxruntime as ort
    import transformers

    src = Path(src)
    info = metadata.read(src, "auto", 0)
    head = heads.for_task(info)
    model = getattr(transformers, head.auto_class).from_pretrained(
        src, local_files_only=True, use_safetensors=True, dtype=torch.float32).eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")  # cross-encoders need the pair's segments
    wrapped = WithHead(model, head, tuple(names)).eval()  # the backbone is eval already; the wrapper too
    example = tuple(torch.full((2, 8), 100, dtype=torch.int64) if n == "input_ids" else
                    torch.ones(2, 8, dtype=torch.int64) if n == "attention_mask" else
                    torch.zeros(2, 8, dtype=torch.int64) for n in names)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with tempfile.TemporaryDirectory(dir=src) as tmp:
        out = Path(tmp) / FILE
        with warnings.catch_warnings():
            for category, message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message, category)
            torch.onnx.export(wrapped, example, str(out), input_names=names, output_names=["rows"],
                              dynamic_shapes={n: {0: batch, 1: length} for n in names}, dynamo=True,
                              external_data=False, opset_version=opset, verbose=False)
        cosine = _check(wrapped, out, src, info, names, ort)
        if cosine < MIN_COSINE:
            raise SnapshotInvalid(f"{FILE} disagrees with torch fp32: cosine {cosine:.6f} < {MIN_COSINE}")
        _list(src, out)
        result = {"file": str(src / FILE), "cosine": cosine, "inputs": names, "bytes": (src / FILE).stat().st_size}
        if variants:
            from tools import onnx_variants

            result["graphs"] = onnx_variants.write(src, wrapped, info, names, example, int8_gate, Path(tmp))
            for name in (FUSED, INT8):
                if result["graphs"][name]["written"]:
                    _list(src, Path(tmp) / name)
                else:  # a graph that failed its check leaves no older one behind
                    _unlist(src, name)
            _list(src, Path(tmp) / QUALITY)
    return result


def _check(wrapped, path: Path, src: Path, info, names: list[str], ort) -> float:
    from snapserve import tokenizer

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids, mask = tokenizer.pad(precision.probe_sequences(src, info), info.pad_id)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    feeds = {n: feeds[n] for n in names}
    with torch.inference_mode():
        reference = wrapped(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
    return float(precision.cosine(reference, session.run(None, feeds)[0]).min())


def _list(src: Path, tmp_file: Path) -> None:
    """Move the checked file in (under its own name) and add its SHA-256 to the manifest (written first,
    then the file: a start in between fails loudly on a listed-but-missing file rather than serving an
    unlisted one)."""
    manifest = src / snapshot.MANIFEST
    if manifest.is_file():  # no manifest, nothing verified: one listing only model.onnx would refuse the rest
        data = json.loads(manifest.read_text())
        data["files"][tmp_file.name] = snapshot.sha256(tmp_file)
        manifest.write_text(json.dumps(data, indent=1) + "\n")
    tmp_file.replace(src / tmp_file.name)


def _unlist(src: Path, name: str) -> None:
    """Remove ``name`` and its manifest entry (file first: a start in between finds it missing, never
    serves it unlisted): a re-export whose graph failed its check leaves no older one behind."""
    (src / name).unlink(missing_ok=True)
    manifest = src / snapshot.MANIFEST
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        if data["files"].pop(name, None) is not None:
            manifest.write_text(json.dumps(data, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.export_onnx", description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, required=True, help="a snapshot folder (written by python -m snapserve.snapshot)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--no-variants", dest="variants", action="store_false",
                   help=f"only {FILE}: no {FUSED}, no {INT8}")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bar in a build log
    import transformers

    transformers.utils.logging.disable_progress_bar()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        skipped = skip_reason(a.src)
        if skipped:
            print(f"export_onnx: skipped: {skipped}")
            return 0
        result = export(a.src, a.opset, a.variants)
    except (SnapshotInvalid, snapshot.SnapshotError, OSError) as exc:
        print(f"export_onnx: {exc}", file=sys.stderr)
        return 1
    print(f"export_onnx: {result['file']} ({result['bytes'] / 2**20:.1f} MiB, inputs {', '.join(result['inputs'])}, "
          f"cosine {result['cosine']:.6f} against torch fp32; listed in {snapshot.MANIFEST})")
    for name, about in result.get("graphs", {}).items():
        if name == FILE:
            continue
        figures = (f"cosine min {about['cosine_min']:.6f}, mean {about['cosine_mean']:.6f} against torch fp32 over "
                   f"{about['texts']} texts" if "cosine_min" in about else "")
        print(f"export_onnx: {a.src / name}: " + (f"written ({figures})" if about.get("written") else
              f"not written: {about.get('why', '')}" + (f" ({figures})" if figures else "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
