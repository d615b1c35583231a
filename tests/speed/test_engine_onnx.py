"""The ONNX Runtime engine: model.onnx written and listed by the export tool, outputs against torch
fp32 and sentence-transformers, --engine auto's pick, int8 only behind its flag and its check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from predictor.encoder import engine, precision
from snapserve import snapshot
from snapserve.metadata import SnapshotInvalid
from tests.integration.helpers import SENTENCES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def onnx_model(model_dir) -> Path:
    if not (model_dir / "model.onnx").is_file():
        pytest.fail(f"no model.onnx in {model_dir}: run `bash ci/setup.d/30-model.sh` (python -m tools.export_onnx)")
    return model_dir


def rows(eng, texts=SENTENCES + list(precision.SENTENCES)) -> np.ndarray:
    from snapserve import tokenizer

    return eng.execute(eng.prepare(tokenizer.TextEncoder(eng.model_dir, eng.info).encode(texts)))


def test_the_baked_snapshot_lists_model_onnx_and_verifies(onnx_model):
    files = json.loads((onnx_model / snapshot.MANIFEST).read_text())["files"]
    assert files["model.onnx"] == snapshot.sha256(onnx_model / "model.onnx")
    assert snapshot.verify(onnx_model)


def test_onnx_matches_torch_fp32_within_0_9999(onnx_model):
    onnx = engine.load(onnx_model, engine="onnx")
    torch_fp32 = engine.load(onnx_model, engine="torch", dtype="float32")
    assert onnx.describe()["engine"] == "onnx" and onnx.describe()["provider"] == "CPUExecutionProvider"
    worst = precision.cosine(rows(torch_fp32), rows(onnx)).min()
    print(f"\nonnx fp32 vs torch fp32: worst cosine {worst:.7f}")
    assert worst >= 0.9999


def test_idle_onnx_threads_sleep_instead_of_spinning(onnx_model):
    """Spinning intra-op threads took the cores the transformer and the HTTP server share with the
    forward pass (2 shared cores: 32 clients 116-119 req/s spinning, 159-162 sleeping)."""
    opts = engine.load(onnx_model, engine="onnx").session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_every_engine_and_dtype_auto_can_pick_matches_sentence_transformers(onnx_model):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(onnx_model), device="cpu").encode(SENTENCES + list(precision.SENTENCES))
    candidates = {"onnx float32": engine.load(onnx_model, engine="onnx"),
                  "torch float32": engine.load(onnx_model, engine="torch", dtype="float32"),
                  "torch auto": engine.load(onnx_model, engine="torch", dtype="auto")}
    for name, eng in candidates.items():
        worst = precision.cosine(reference, rows(eng)).min()
        print(f"\n{name} ({eng.describe()['dtype']}) vs sentence-transformers: worst cosine {worst:.6f}")
        assert worst >= 0.999, name


def test_engine_auto_keeps_the_faster_and_logs_both(onnx_model, caplog):
    caplog.set_level("INFO", "snapserve.predictor")
    eng = engine.load(onnx_model, engine="auto")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("engine auto:"))
    print("\n" + line)
    assert eng.describe()["engine"] in line.split("(")[0] and "torch" in line and "onnx" in line


def test_a_snapshot_without_model_onnx(tmp_path, model_dir):
    snap = tmp_path / "snap"
    snapshot.export(model_dir, snap)
    assert not (snap / "model.onnx").exists() or snapshot.verify(snap)
    (snap / "model.onnx").unlink(missing_ok=True)
    with pytest.raises(SnapshotInvalid, match=r"no model\.onnx.*export_onnx"):
        engine.load(snap, engine="onnx")
    with pytest.raises(SnapshotInvalid, match="--quantize int8 needs --engine onnx"):
        engine.load(snap, engine="torch", quantize="int8")
    with pytest.raises(SnapshotInvalid, match="--dtype and --compile are torch's"):
        engine.load(snap, engine="onnx", dtype="bfloat16")


def test_export_tool_writes_lists_and_checks_model_onnx(tmp_path, tiny_bert):
    snap = tmp_path / "snap"
    snapshot.export(tiny_bert, snap)
    r = subprocess.run([sys.executable, "-m", "tools.export_onnx", "--src", str(snap)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cosine 1.0000" in r.stdout or "cosine 0.9999" in r.stdout
    assert snapshot.verify(snap) and "model.onnx" in json.loads((snap / snapshot.MANIFEST).read_text())["files"]
    assert not [p for p in snap.iterdir() if p.is_dir() and p.name.startswith("tmp")]  # no leftovers
    onnx = engine.load(snap, engine="onnx")
    assert onnx.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    # dynamic axes: other batch sizes and lengths than the export's 2 x 8
    for batch, length in ((1, 3), (5, 16)):
        out = onnx.execute(onnx.prepare([np.arange(100, 100 + length)] * batch))
        assert out.shape == (batch, onnx.info.width)
    # an altered or an unlisted model.onnx is refused at start
    with (snap / "model.onnx").open("r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"\x00" * 10)
    with pytest.raises(snapshot.SnapshotError, match=r"model\.onnx: SHA-256 does not match"):
        snapshot.verify(snap)
    manifest = json.loads((snap / snapshot.MANIFEST).read_text())
    del manifest["files"]["model.onnx"]
    (snap / snapshot.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(snapshot.SnapshotError, match=r"model\.onnx: not listed"):
        snapshot.verify(snap)


def test_int8_only_behind_its_flag_and_only_if_it_passes(onnx_model, caplog):
    caplog.set_level("INFO", "snapserve.predictor")
    eng = engine.load(onnx_model, engine="onnx", quantize="int8")
    # the export's gated model.int8.onnx when the snapshot has one, else dynamic int8 quantised at start
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("precision check: onnx")
                and "int8" in r.getMessage())
    print("\n" + line)
    kept = "kept" in line
    assert eng.describe()["dtype"] == ("int8" if kept else "float32")
    assert engine.load(onnx_model, engine="onnx").describe()["dtype"] == "float32"  # never without the flag


def test_copying_a_snapshot_keeps_model_onnx(tmp_path, onnx_model):
    out = tmp_path / "copy"
    shutil.rmtree(out, ignore_errors=True)
    snapshot.export(onnx_model, out)
    assert (out / "model.onnx").is_file() and snapshot.verify(out)


def test_a_split_kept_by_the_tuning_cache_is_served_again_without_a_race(onnx_model, tmp_path, caplog):
    from predictor.encoder import tuning_cache

    cache = tuning_cache.TuningCache(str(tmp_path), "split")
    cache.put("engine", "onnx<=128<torch")
    caplog.set_level("INFO", "snapserve.predictor")
    eng = engine.load(onnx_model, engine="auto", cache=tuning_cache.TuningCache(str(tmp_path), "split"))
    assert eng.describe()["engine"] == "onnx<=128<torch" and eng.max_small_tokens == 128
    # no engine race ran: its line names the cache, not timings (the dtype race may log its own: another choice)
    picks = [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine auto:")]
    assert picks and all("measured faster at an earlier start" in m and "1x16" not in m for m in picks), picks
    assert (eng.small.describe()["engine"], eng.large.describe()["engine"]) == ("onnx", "torch")
