#!/usr/bin/env bash
# Installs everything snapshot serving and its tests need on a fresh Debian/Ubuntu box (as root):
# runs ci/setup.d/*.sh in order. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
for step in ci/setup.d/*.sh; do
  echo "setup: $step"
  bash "$step"
done
