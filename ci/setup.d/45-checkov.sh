#!/usr/bin/env bash
# checkov (Kubernetes misconfiguration checks on the rendered chart) in its own venv: its pins
# (boto3, networkx, ...) must not move the serving venv's packages.
# step: checkov, in a venv of its own
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-checkov
want=3.3.30
if [ -x "$venv/bin/checkov" ] && [ "$("$venv/bin/checkov" --version 2>/dev/null)" = "$want" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q "checkov==$want" 2>&1 | { grep -v '^WARNING: Location' || true; }
"$venv/bin/checkov" --version
