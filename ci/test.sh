#!/usr/bin/env bash
# Installs what is missing (ci/setup.sh), then runs the whole test suite; "no tests collected" (pytest exit 5) is a failure too.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
[ -n "${SNAPSERVE_SKIP_SETUP:-}" ] || bash ci/setup.sh || exit 1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SNAPSERVE_MODEL_DIR="${SNAPSERVE_MODEL_DIR:-$PWD/models/all-MiniLM-L6-v2}"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
[ "$rc" -eq 5 ] && echo "test.sh: pytest collected no tests" >&2
exit "$rc"
