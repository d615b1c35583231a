#!/usr/bin/env bash
# Debian packages serving needs: a Python venv, curl for the README's calls, ps for the run script.
# step: Debian packages (python3-venv, curl, procps)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=ci/lib/apt.sh
source ci/lib/apt.sh
apt_install python3-venv curl ca-certificates procps
