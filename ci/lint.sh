#!/usr/bin/env bash
# Lint: ruff (Python), hadolint (both Dockerfiles), helm lint (the chart with its defaults and each
# charts/snapserve/ci/*-values.yaml), shellcheck (the pipeline's own scripts) and actionlint (the
# workflow). `make lint` runs it after setup; the workflow's lint job calls it too.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
[ -x "$bin/helm" ] || bash ci/setup.d/40-helm.sh
[ -x "$bin/actionlint" ] || bash ci/setup.d/55-actionlint.sh

echo "lint: ruff"
"$bin/ruff" check .
echo "lint: hadolint"
"$bin/hadolint" predictor/Dockerfile transformer/Dockerfile
echo "lint: helm lint"
"$bin/helm" lint --strict charts/snapserve >/dev/null
for values in charts/snapserve/ci/*-values.yaml; do
  "$bin/helm" lint --strict charts/snapserve -f "$values" >/dev/null || { echo "lint: helm lint -f $values failed" >&2; exit 1; }
done
echo "lint: shellcheck"
shellcheck -x ci/lint.sh ci/build-images.sh ci/e2e-kind.sh ci/setup.d/*.sh ci/lib/*.sh ci/run-local.sh ci/test.sh ci/setup.sh ci/render-manifests.sh ci/render-chart-docs.sh ci/validate-chart.sh
echo "lint: actionlint"
"$bin/actionlint" .github/workflows/*.yaml
echo "lint: ok"
