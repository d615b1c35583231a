"""The export's fused and int8 graphs (issue 24): the fused graph within cosine 0.9999 of the unfused one,
int8 present only with its gate figure (>= 0.995) recorded, a failing gate writes no file, and the engine
race considers each graph the snapshot has."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from predictor.encoder import engine, onnx as engine_onnx, precision
from snapserve import snapshot, tokenizer
from tools import export_onnx, onnx_variants


def rows(eng, texts) -> np.ndarray:
    seqs = tokenizer.TextEncoder(eng.model_dir, eng.info).encode(texts)
    return np.concatenate([eng.execute(eng.prepare(seqs[i:i + 16])) for i in range(0, len(seqs), 16)])


@pytest.fixture(scope="module")
def exported(model_dir) -> Path:
    """The default model's snapshot as setup leaves it (ci/setup.d/30-model.sh runs the export)."""
    if not (model_dir / engine_onnx.QUALITY_FILE).is_file():
        pytest.fail(f"no {engine_onnx.QUALITY_FILE} in {model_dir}: run `bash ci/setup.d/30-model.sh`")
    return model_dir


def test_the_fixed_texts_are_many_and_varied():
    texts = onnx_variants.texts()
    assert len(texts) >= 64 and len(set(texts)) == len(texts)
    assert any(len(t) > 800 for t in texts) and any(len(t) <= 3 for t in texts)  # past a 256-token window, and tiny
    assert any("\uac00" <= c <= "\ud7a3" for t in texts for c in t)  # Hangul, beside Latin, CJK, Cyrillic


def test_setup_wrote_a_fused_graph_within_0_9999_of_the_unfused_one(exported):
    quality = engine_onnx.quality(exported)
    fused = quality[engine_onnx.FUSED_FILE]
    assert fused["written"] and fused["cosine_min"] >= 0.9999 and fused["opt_level"] == 1
    assert fused["fused"].get("Attention", 0) > 0, fused  # the point: attention as one kernel
    files = json.loads((exported / snapshot.MANIFEST).read_text())["files"]
    assert files[engine_onnx.FUSED_FILE] == snapshot.sha256(exported / engine_onnx.FUSED_FILE)
    assert snapshot.verify(exported)
    plain, fused_eng = (engine.load(exported, engine=name) for name in ("onnx", "onnx-fused"))
    assert fused_eng.describe()["engine"] == "onnx-fused" and fused_eng.dtype == "float32"
    texts = onnx_variants.texts()
    worst = precision.cosine(rows(plain, texts), rows(fused_eng, texts)).min()
    print(f"\nfused vs unfused onnx over {len(texts)} texts: worst cosine {worst:.7f}")
    assert worst >= 0.9999


def test_int8_exists_only_with_its_gate_figure_recorded(exported):
    int8 = engine_onnx.quality(exported)[engine_onnx.INT8_FILE]
    present = (exported / engine_onnx.INT8_FILE).is_file()
    print(f"\nint8: {'written' if present else 'not written'}: {int8}")
    assert present == bool(int8["written"])
    assert int8["gate"] >= 0.995 and int8["texts"] >= 64
    if present:
        assert int8["cosine_min"] >= int8["gate"]
        eng = engine.load(exported, engine="onnx-int8")
        assert eng.dtype == "int8"
        texts = onnx_variants.texts()
        worst = precision.cosine(rows(engine.load(exported, engine="onnx"), texts), rows(eng, texts)).min()
        assert worst >= 0.995
    else:
        assert int8["cosine_min"] < int8["gate"] and int8["why"]


def test_the_race_considers_each_graph_the_snapshot_has(exported, tmp_path):
    names = engine_onnx.candidates(exported)
    assert names[:2] == ["onnx", "onnx-fused"]
    assert ("onnx-int8" in names) == (exported / engine_onnx.INT8_FILE).is_file()
    assert "onnx-int8" not in engine_onnx.candidates(exported, quantize="none")
    # an int8 file whose recorded gate figure is missing or below 0.995 is never raced
    snap = tmp_path / "snap"
    snap.mkdir()
    for name in (engine_onnx.FILE, engine_onnx.INT8_FILE):
        (snap / name).write_bytes(b"")
    assert engine_onnx.candidates(snap) == ["onnx"]
    (snap / engine_onnx.QUALITY_FILE).write_text(json.dumps(
        {"graphs": {engine_onnx.INT8_FILE: {"written": True, "cosine_min": 0.99}}}))
    assert engine_onnx.candidates(snap) == ["onnx"]


def test_engine_auto_races_the_fused_and_int8_graphs(exported, caplog):
    caplog.set_level("INFO", "snapserve.predictor")
    torch_engine = engine.TorchEngine(exported, engine.metadata.read(exported, "auto", 0), dtype="auto")
    picked = engine_onnx.fastest(torch_engine, exported, torch_engine.info, 1, 0, "auto")
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine auto:")][-1]
    print("\n" + line)
    raced = [part.split(" ")[0] for part in line.split("(", 1)[1].split("; ")]
    # every candidate races unless this CPU's start-up check left it out, and says so (int8's kernels differ
    # by instruction set: the export's gate ran on the build machine's CPU)
    left_out = [name for name in engine_onnx.candidates(exported) if f"engine race: without {name}" in caplog.text]
    assert raced == ["torch", *(n for n in engine_onnx.candidates(exported) if n not in left_out)]
    assert {"onnx", "onnx-fused"} <= set(raced)
    assert "onnx export quality: model.fused.onnx" in caplog.text  # the figures, logged at start
    assert picked.describe()["engine"] in line.split("(")[0]


def test_a_failing_gate_writes_no_int8_file(tmp_path, tiny_bert):
    snap = tmp_path / "snap"
    snapshot.export(tiny_bert, snap)
    (snap / engine_onnx.INT8_FILE).write_bytes(b"an older int8 graph")  # a re-export must not leave it
    result = export_onnx.export(snap, int8_gate=1.01)  # above any cosine
    int8 = result["graphs"][engine_onnx.INT8_FILE]
    assert not int8["written"] and "1.01" in int8["why"] and len(int8["tried"]) == 2
    assert not (snap / engine_onnx.INT8_FILE).exists()
    assert result["graphs"][engine_onnx.FUSED_FILE]["written"] and (snap / engine_onnx.FUSED_FILE).is_file()
    recorded = json.loads((snap / engine_onnx.QUALITY_FILE).read_text())["graphs"]
    assert recorded[engine_onnx.INT8_FILE]["written"] is False
    assert snapshot.verify(snap)  # the fused graph and the figures listed, no int8 entry left
    assert engine_onnx.INT8_FILE not in json.loads((snap / snapshot.MANIFEST).read_text())["files"]
    assert engine_onnx.candidates(snap) == ["onnx", "onnx-fused"]
    assert not [p for p in snap.iterdir() if p.is_dir() and p.name.startswith("tmp")]  # no leftovers
