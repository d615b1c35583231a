#!/usr/bin/env bash
# The test tools in the same venv (pytest, locust, schemathesis, openai, kubernetes-validate, ...).
# step: the test tools in .venv/ (pytest, locust, schemathesis, ...)
set -euo pipefail
# the lock (ci/lock.sh) keeps the tested versions the ones the images install
export PIP_CONSTRAINT="$PWD/ci/constraints.txt $PWD/ci/lock/images.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.snapserve-test-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q -e '.[predictor,model,test]' 2>&1 | { grep -v '^WARNING: Location' || true; }
  .venv/bin/python -c "import pytest, locust, schemathesis, openai, kubernetes_validate"
  touch "$stamp"
fi
