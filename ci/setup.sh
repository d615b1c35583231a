#!/usr/bin/env bash
# Installs what snapserve needs on a fresh Debian/Ubuntu box (as root), by running ci/setup.d/*.sh in order.
#   bash ci/setup.sh serve   only what serving the default model needs (the README's run command;
#                            MODEL=generate adds the generative model)
#   bash ci/setup.sh         everything: serving plus every test tool (the README's test command)
# Idempotent: a second run only checks.
# One line per step (its "# step:" line). A step's output goes to a log; only its own notes ("NN-name: ...")
# reach the terminal. A step that fails prints the end of its log and the log's path, and setup stops with
# the step's exit status. SETUP_VERBOSE=1 shows all output as it comes.
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
  name=$(basename "$step" .sh)
  printf 'setup: %-18s %s\n' "$name" "$(sed -n 's/^# step: //p' "$step" | head -n 1)"
  if [ -n "${SETUP_VERBOSE:-}" ]; then
    bash "$step"
    continue
  fi
  log=$(mktemp "${TMPDIR:-/tmp}/snapserve-setup-$name.XXXXXX")
  set +e
  bash "$step" 2>&1 | tee "$log" | grep --line-buffered -E "^$name: "
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    { echo "setup: $step failed (exit $rc); the end of its output:"
      tail -n 40 "$log" | sed 's/^/  /'
      echo "setup: the whole output is in $log"; } >&2
    exit "$rc"
  fi
  rm -f "$log"
done
