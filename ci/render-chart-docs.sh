#!/usr/bin/env bash
# Regenerates charts/snapserve/values.schema.json and the Parameters tables of charts/snapserve/README.md
# from the `## @param` comments of values.yaml with readme-generator-for-helm (pinned, installed by
# ci/setup.d/60-node.sh), then ci/values_schema.py adds the overlay's constraints and closes every object
# (the generator writes types, descriptions and defaults only). `--check` renders to a temporary folder
# and exits 1 when either file differs (CI: the committed files are stale).
set -euo pipefail
cd "$(dirname "$0")/.."
gen=.tools/node/node_modules/@bitnami/readme-generator-for-helm/bin/index.js
[ -f "$gen" ] || { echo "render-chart-docs: $gen missing; run bash ci/setup.d/60-node.sh" >&2; exit 2; }
chart=charts/snapserve

check=0
[ "${1:-}" = "--check" ] && check=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The generator rewrites the README in place (only its "## Parameters" section), so it works on a copy.
cp "$chart/README.md" "$tmp/README.md"
if ! node "$gen" --values "$chart/values.yaml" --readme "$tmp/README.md" --schema "$tmp/generated.json" \
     > "$tmp/log" 2>&1; then
  grep -v '^Skipping\|^INFO\|^    at ' "$tmp/log" >&2   # its errors name the keys whose ## @param is missing or wrong
  exit 1
fi
python3 ci/values_schema.py "$tmp/generated.json" "$chart/values.schema.overlay.json" "$tmp/values.schema.json"

if [ "$check" = 1 ]; then
  stale=0
  for f in values.schema.json README.md; do
    if ! diff -u "$chart/$f" "$tmp/$f" > "$tmp/$f.diff" 2>&1; then
      echo "render-chart-docs: $chart/$f is stale; run bash ci/render-chart-docs.sh and commit" >&2
      head -40 "$tmp/$f.diff" >&2
      stale=1
    fi
  done
  exit "$stale"
fi
cp "$tmp/values.schema.json" "$tmp/README.md" "$chart/"
echo "render-chart-docs: wrote $chart/values.schema.json $chart/README.md"
