#!/usr/bin/env bash
# Installs what snapserve needs on a fresh Debian/Ubuntu box (as root), by running ci/setup.d/*.sh in order.
#   bash ci/setup.sh serve   only what serving the default model needs (the README's run command;
#                            MODEL=generate adds the generative model)
#   bash ci/setup.sh         everything: serving plus every test tool (the README's test command)
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVE=(ci/setup.d/10-apt.sh ci/setup.d/20-venv.sh ci/setup.d/30-model.sh)
# MODEL=generate: serving also the default generative model (SmolLM2-135M-Instruct, ci/setup.d/35-model-generate.sh)
[ "${MODEL:-}" != generate ] || SERVE+=(ci/setup.d/35-model-generate.sh)
case "${1:-test}" in
  serve) steps=("${SERVE[@]}") ;;
  test) steps=(ci/setup.d/*.sh) ;;
  *) echo "usage: bash ci/setup.sh [serve|test]" >&2; exit 2 ;;
esac
for step in "${steps[@]}"; do
  echo "setup: $step"
  bash "$step"
done
