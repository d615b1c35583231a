"""``python -m tools.export_onnx`` on a causal LM (the chat predictor image's build step): one clear line,
exit 0, nothing written, and no export attempted."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOL = ROOT / "models" / "SmolLM2-135M-Instruct"


def test_a_generate_snapshot_is_skipped_before_any_export(monkeypatch, capsys):
    if not (SMOL / "config.json").is_file():
        pytest.fail(f"generative model missing at {SMOL}: run `bash ci/setup.d/35-model-generate.sh`")
    from tools import export_onnx

    def never(*_, **__):
        raise AssertionError("a causal LM must not be exported")

    monkeypatch.setattr(export_onnx, "export", never)
    before = sorted(p.name for p in SMOL.iterdir())
    assert export_onnx.main(["--src", str(SMOL)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("export_onnx: skipped:") and "causal LM" in out[0], out
    assert sorted(p.name for p in SMOL.iterdir()) == before and not (SMOL / "model.onnx").exists()
