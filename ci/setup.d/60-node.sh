#!/usr/bin/env bash
# readme-generator-for-helm (values.schema.json and the chart README from values.yaml, see
# ci/render-chart-docs.sh) under .tools/node, pinned with its dependencies by ci/node/package-lock.json.
# No global npm installs: `npm ci` into the repo only. Node.js and npm come from Debian when missing.
# step: readme-generator-for-helm (node)
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  # shellcheck source=ci/lib/apt.sh
  source ci/lib/apt.sh
  apt_install nodejs npm
fi
dest=.tools/node
want=2.7.2
pkg=$dest/node_modules/@bitnami/readme-generator-for-helm/package.json
if [ -f "$pkg" ] && cmp -s ci/node/package-lock.json "$dest/package-lock.json"; then
  exit 0
fi
mkdir -p "$dest"
cp ci/node/package.json ci/node/package-lock.json "$dest/"
npm ci --prefix "$dest" --no-audit --no-fund --ignore-scripts --loglevel=error
got=$(node -p "require('./$pkg').version")
[ "$got" = "$want" ] || { echo "60-node: readme-generator-for-helm is $got, expected $want" >&2; exit 1; }
echo "60-node: readme-generator-for-helm $got"
