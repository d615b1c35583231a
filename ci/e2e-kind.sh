#!/usr/bin/env bash
# End-to-end on kind: a throwaway cluster with cert-manager, KServe (Standard = RawDeployment mode) and
# ingress-nginx; both images built (ci/build-images.sh) and `kind load`ed; the chart installed with
# ci/e2e-values.yaml; the InferenceService Ready; `helm test`; then a short locust run through the
# Ingress with the SLO gate (loadtest/locust/slo.py makes locust exit non-zero when the SLO is missed).
# Needs docker, kind, kubectl, helm, locust (LOCUST=...) and the upstream manifests' hosts; the GitHub
# Actions e2e job runs it. Machines without a Docker engine cannot.
#   bash ci/e2e-kind.sh          KEEP_CLUSTER=1 keeps the cluster; diagnostics land in $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-snapserve-e2e}
RELEASE=${RELEASE:-snapserve}         # also the InferenceService name, hence the model name in URLs
NAMESPACE=${NAMESPACE:-snapserve}
TAG=${TAG:-e2e}
KSERVE_VERSION=${KSERVE_VERSION:-v0.21.0}
DEPLOYMENT_MODE=${DEPLOYMENT_MODE:-Standard}   # RawDeployment for KServe < 0.16
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.19.1}
INGRESS_NGINX_VERSION=${INGRESS_NGINX_VERSION:-controller-v1.14.0}
HTTP_PORT=${HTTP_PORT:-8088}          # host port kind maps to the ingress controller's port 80
LOCUST=${LOCUST:-locust}
LOAD_USERS=${LOAD_USERS:-8}
LOAD_TIME=${LOAD_TIME:-60s}
SLO_P99_MS=${SLO_P99_MS:-2000}
SLO_MAX_FAILURE_RATIO=${SLO_MAX_FAILURE_RATIO:-0.01}
OUT=${OUT:-out/e2e}
mkdir -p "$OUT"

# retry N CMD...: webhooks (cert-manager's, KServe's) answer a little after their pods are Available.
retry() {
  local n=$1; shift
  for ((i = 1; i <= n; i++)); do "$@" && return 0; echo "e2e: retry $i/$n: $*" >&2; sleep 10; done
  return 1
}
step() { echo "::group::e2e: $*" 2>/dev/null; echo "e2e: $*"; }
endstep() { echo "::endgroup::"; }

diagnose() {
  echo "e2e: failed; diagnostics in $OUT" >&2
  {
    kubectl get pods -A -o wide
    kubectl -n "$NAMESPACE" get inferenceservice "$RELEASE" -o yaml
    kubectl -n "$NAMESPACE" describe pods
    kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp
  } >"$OUT/cluster.txt" 2>&1 || true
  for c in predictor transformer; do
    kubectl -n "$NAMESPACE" logs -l "component=$c" --all-containers --tail=300 >"$OUT/$c.log" 2>&1 || true
  done
  kubectl -n kserve logs deploy/kserve-controller-manager --tail=300 >"$OUT/kserve-controller.log" 2>&1 || true
}
cleanup() {
  rc=$?
  [ "$rc" -ne 0 ] && diagnose
  [ "${KEEP_CLUSTER:-0}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT

step "kind cluster $CLUSTER (ingress on localhost:$HTTP_PORT)"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 180s --config - <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    labels:
      ingress-ready: "true"
    extraPortMappings:
      - {containerPort: 80, hostPort: $HTTP_PORT, protocol: TCP}
KIND
fi
kubectl config use-context "kind-$CLUSTER"
endstep

step "images (ci/build-images.sh, CPU torch) -> kind load"
IMAGE_PREFIX=snapserve TAG="$TAG" TORCH="${TORCH:-torch==2.13.0+cpu}" \
  TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" bash ci/build-images.sh
kind load docker-image --name "$CLUSTER" "snapserve/predictor:$TAG" "snapserve/transformer:$TAG"
endstep

step "cert-manager $CERT_MANAGER_VERSION and ingress-nginx $INGRESS_NGINX_VERSION"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX_VERSION/deploy/static/provider/kind/deploy.yaml"
kubectl -n cert-manager wait deploy --all --for=condition=Available --timeout=300s
kubectl -n ingress-nginx wait pod -l app.kubernetes.io/component=controller --for=condition=Ready --timeout=300s
endstep

step "KServe $KSERVE_VERSION, default deployment mode $DEPLOYMENT_MODE"
retry 12 kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve.yaml"
kubectl -n kserve wait deploy/kserve-controller-manager --for=condition=Available --timeout=300s
retry 12 kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION/kserve-cluster-resources.yaml"
kubectl -n kserve patch configmap inferenceservice-config --type merge \
  -p "{\"data\":{\"deploy\":\"{\\\"defaultDeploymentMode\\\": \\\"$DEPLOYMENT_MODE\\\"}\"}}"
kubectl -n kserve rollout restart deploy/kserve-controller-manager
kubectl -n kserve rollout status deploy/kserve-controller-manager --timeout=300s
endstep

step "helm install $RELEASE (charts/snapserve + ci/e2e-values.yaml)"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
retry 6 helm upgrade --install "$RELEASE" charts/snapserve -n "$NAMESPACE" -f ci/e2e-values.yaml \
  --set kserve.deploymentMode="$DEPLOYMENT_MODE" --wait=false
kubectl -n "$NAMESPACE" wait "inferenceservice/$RELEASE" --for=condition=Ready --timeout=900s
kubectl -n "$NAMESPACE" get inferenceservice,pods,svc,ingress
endstep

step "helm test"
helm test "$RELEASE" -n "$NAMESPACE" --logs --timeout 600s
endstep

step "route: one request through the Ingress"
for _ in $(seq 1 60); do
  curl -fsS "http://localhost:$HTTP_PORT/v2/health/ready" >/dev/null 2>&1 && break
  sleep 2
done
curl -fsS "http://localhost:$HTTP_PORT/v1/models/$RELEASE:predict" -H 'Content-Type: application/json' \
  -d '{"instances": ["kind end-to-end"]}' | python3 -c \
  'import json, sys; v = json.load(sys.stdin)["predictions"][0]; assert len(v) == 384, len(v); print("e2e: 384 floats")'
endstep

step "locust through the Ingress: $LOAD_USERS users for $LOAD_TIME, SLO p99 <= ${SLO_P99_MS} ms, failures <= $SLO_MAX_FAILURE_RATIO"
"$LOCUST" -f loadtest/locust/locustfile.py --headless -H "http://localhost:$HTTP_PORT" -u "$LOAD_USERS" -r "$LOAD_USERS" \
  -t "$LOAD_TIME" --model-name "$RELEASE" --slo-p99-ms "$SLO_P99_MS" --slo-max-failure-ratio "$SLO_MAX_FAILURE_RATIO" \
  --csv "$OUT/locust" --html "$OUT/locust.html" --only-summary SingleSentenceUser OpenAIUser
endstep
echo "e2e: ok"
