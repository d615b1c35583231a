"""helm lint / template with Helm 3 and Helm 4, the values schema, render-time failures, NOTES."""

from __future__ import annotations

import pytest

from tests.chart.chart_tools import (
    CHART,
    CI_VALUES,
    HELMS,
    NAMESPACE,
    RELEASE,
    find,
    render,
    render_error,
    run_helm,
    values_id,
)

HELM_NAMES = sorted(HELMS)
CASES = [pytest.param(h, v, id=f"{h}-{values_id(v)}") for v in CI_VALUES for h in HELM_NAMES]


def test_every_feature_has_a_ci_values_file():
    expected = {"defaults", "gpu", "gateway", "ingress-tls", "monitoring", "autoscaling", "serverless", "everything",
                "auth", "rerank", "generation"}
    assert {values_id(v) for v in CI_VALUES} == expected


@pytest.mark.parametrize("helm_name", HELM_NAMES)
def test_helm_versions(helm_name):
    version = run_helm(helm_name, "version", "--template", "{{.Version}}").stdout.strip()
    assert version == {"helm4": "v4.1.4", "helm3": "v3.17.2"}[helm_name]


@pytest.mark.parametrize("helm_name,values", CASES)
def test_lint_strict(helm_name, values):
    run_helm(helm_name, "lint", "--strict", str(CHART), "-f", str(values), "--namespace", NAMESPACE)


@pytest.mark.parametrize("helm_name,values", CASES)
def test_template_renders(helm_name, values):
    docs = render(helm_name, values)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("InferenceService") == 1
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_helm3_and_helm4_render_the_same(values):
    assert render("helm3", values) == render("helm4", values)


@pytest.mark.parametrize("helm_name", HELM_NAMES)
@pytest.mark.parametrize("typo", [
    "predictor.batching.maxBatchSise=64",       # misspelled nested key
    "httpRoutes.enabled=true",                  # misspelled top-level key
    "predictor.autoscaling.maxReplicas=many",   # wrong type
    "kserve.deploymentMode=Serverles",          # not one of the modes
])
def test_schema_rejects_typos(helm_name, typo):
    err = render_error(helm_name, sets=(typo,))
    assert "schema" in err.lower() or "not allowed" in err or "additional" in err.lower(), err


# (values to set, words the failure message must name)
IMPOSSIBLE = {
    "route-in-knative": (("kserve.deploymentMode=Knative", "httpRoute.enabled=true"),
                         ["httpRoute.enabled", "kserve.deploymentMode"]),
    "ingress-in-knative": (("kserve.deploymentMode=Serverless", "ingress.enabled=true"), ["ingress.enabled"]),
    "keda-in-knative": (("kserve.deploymentMode=Knative", "kserve.autoscalerClass=keda"),
                        ["kserve.autoscalerClass", "kserve.deploymentMode"]),
    "min-above-max": (("predictor.autoscaling.minReplicas=3", "predictor.autoscaling.maxReplicas=2"),
                      ["predictor.autoscaling.minReplicas", "predictor.autoscaling.maxReplicas"]),
    "zero-in-standard": (("transformer.autoscaling.minReplicas=0",), ["transformer.autoscaling.minReplicas"]),
    "knative-metric-in-standard": (("predictor.autoscaling.scaleMetric=rps",), ["predictor.autoscaling.scaleMetric"]),
    "hpa-metric-in-knative": (("kserve.deploymentMode=Knative", "predictor.autoscaling.scaleMetric=cpu"),
                              ["predictor.autoscaling.scaleMetric"]),
    "metric-with-keda": (("kserve.autoscalerClass=keda", "predictor.autoscaling.scaleMetric=cpu"),
                         ["predictor.autoscaling.scaleMetric", "keda"]),
    "keda-without-query": (("kserve.autoscalerClass=keda", "transformer.autoscaling.keda.query="),
                           ["transformer.autoscaling.keda.query"]),
    "gpu-on-cpu-device": (("predictor.gpu.enabled=true", "predictor.device=cpu"),
                          ["predictor.gpu.enabled", "predictor.device"]),
    "cuda-without-gpu": (("predictor.device=cuda",), ["predictor.gpu.enabled"]),
    "retry-on-standard-channel": (("httpRoute.enabled=true", "httpRoute.retry.attempts=2"),
                                  ["httpRoute.experimentalChannel"]),
    "drain-longer-than-grace": (("predictor.drainSeconds=55",),
                                ["predictor.terminationGracePeriodSeconds", "predictor.drainSeconds"]),
    "mode-via-annotations": (("kserve.annotations.serving\\.kserve\\.io/deploymentMode=Knative",),
                             ["kserve.deploymentMode"]),
    "tls-without-secret": (("ingress.enabled=true", "ingress.tls.enabled=true"), ["ingress.tls.secretName"]),
    "auth-without-secret": (("transformer.auth.enabled=true",), ["transformer.auth.existingSecret"]),
    "queue-below-coalesced-calls": (("predictor.batching.maxQueueSequences=1000",),
                                    ["predictor.batching.maxQueueSequences", "transformer.coalesce.maxSequences",
                                     "transformer.coalesce.maxInFlight", "256 x 4 = 1024", "429"]),
    "coalesced-calls-above-queue": (("transformer.coalesce.maxSequences=1024", "transformer.coalesce.maxInFlight=8"),
                                    ["predictor.batching.maxQueueSequences (4096)", "1024 x 8 = 8192"]),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_impossible_combinations_fail_with_the_values_to_change(case):
    sets, words = IMPOSSIBLE[case]
    err = render_error("helm4", sets=sets)
    for word in words:
        assert word in err, f"{case}: message does not name {word}:\n{err}"


def test_retry_renders_on_the_experimental_channel():
    docs = render("helm4", sets=("httpRoute.enabled=true", "httpRoute.experimentalChannel=true",
                                 "httpRoute.retry.attempts=2"))
    retry = find(docs, "HTTPRoute")["spec"]["rules"][0]["retry"]
    assert retry == {"attempts": 2, "backoff": "100ms", "codes": [429, 503]}


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_kserve_contract(values):
    """Container names KServe requires; no flag KServe injects into the transformer is passed twice."""
    docs = render("helm4", values)
    isvc = find(docs, "InferenceService")
    name = isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]["containers"][0]
    transformer = isvc["spec"]["transformer"]["containers"][0]
    assert predictor["name"] == transformer["name"] == "kserve-container"
    assert predictor["command"] == ["python", "-m", "predictor"]
    assert transformer["command"] == ["python", "-m", "transformer"]
    pargs, targs = predictor["args"], transformer["args"]
    # The transformer calls /v1|v2/models/<isvc name>; the predictor must serve that name.
    assert pargs[pargs.index("--model_name") + 1] == name
    for flag, value in (("--model_dir", "/mnt/models"), ("--http_port", "8080"), ("--grpc_port", "8081")):
        assert pargs[pargs.index(flag) + 1] == value and targs[targs.index(flag) + 1] == value
    assert "--model_name" not in targs and "--predictor_host" not in targs
    encoder_flags = ("--max_batch_size", "--max_batch_tokens", "--max_delay_ms", "--max_queue_sequences")
    generating = "--task" in pargs and pargs[pargs.index("--task") + 1] == "generate"
    for flag in encoder_flags:  # a chat predictor would refuse another task's flags at start
        assert (flag in pargs) != generating, flag
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    assert mode in {"Standard", "Knative"}
    for c in (predictor, transformer):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        # Knative rejects lifecycle hooks and owns the termination grace period.
        assert ("lifecycle" in c) == (mode == "Standard")
    for comp in ("predictor", "transformer"):
        spec = isvc["spec"][comp]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        if mode == "Standard":
            pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
            assert spec["terminationGracePeriodSeconds"] > pre_stop > 0
        else:
            assert "terminationGracePeriodSeconds" not in spec


def test_gpu_scheduling():
    docs = render("helm4", CHART / "ci" / "gpu-values.yaml")
    pred = find(docs, "InferenceService")["spec"]["predictor"]
    assert pred["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pred["runtimeClassName"] == "nvidia" and pred["priorityClassName"] == "inference-high"
    assert pred["tolerations"][0]["key"] == "nvidia.com/gpu" and pred["nodeSelector"]
    transformer = find(docs, "InferenceService")["spec"]["transformer"]
    assert "nvidia.com/gpu" not in str(transformer["containers"])
    # several CPU transformers per GPU predictor, with room to queue (README "On a GPU")
    assert transformer["minReplicas"] >= 4
    assert "8192" in str(transformer["containers"][0].get("env", [])) + str(transformer["containers"][0].get("args", []))


def test_keda_autoscaling():
    isvc = find(render("helm4", CHART / "ci" / "autoscaling-values.yaml"), "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    metric = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]
    assert metric["type"] == "External" and "snapserve_queue_depth" in metric["external"]["metric"]["query"]
    assert "scaleMetric" not in isvc["spec"]["predictor"]


def test_network_policy_admits_only_transformer_and_scraper():
    policy = find(render("helm4"), "NetworkPolicy", "-predictor")
    assert policy["spec"]["podSelector"]["matchLabels"]["component"] == "predictor"
    peers = [p for rule in policy["spec"]["ingress"] for p in rule["from"]]
    assert peers[0]["podSelector"]["matchLabels"]["component"] == "transformer"
    assert peers[1]["namespaceSelector"] and peers[1]["podSelector"] and len(peers) == 2


def test_podmonitor_relabels_component():
    monitor = find(render("helm4", CHART / "ci" / "monitoring-values.yaml"), "PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http1"
    knative = find(render("helm4", CHART / "ci" / "serverless-values.yaml", ("podMonitor.enabled=true",)), "PodMonitor")
    assert knative["spec"]["podMetricsEndpoints"][0]["port"] == "user-port"
    relabel = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_component"]
    assert relabel["targetLabel"] == "component"


NOTES = {
    "defaults": ["port-forward service/snapserve-transformer", "http://127.0.0.1:8080"],
    "auth": ["get secret snapserve-api-keys -o jsonpath='{.data.api-keys}' | base64 -d | head -n1",
             """-H 'Content-Type: application/json' -H "Authorization: Bearer $SNAPSERVE_API_KEY" \\"""],
    "gateway": ["SNAPSERVE_URL=https://embeddings.example.com/embeddings"],
    "ingress-tls": ["SNAPSERVE_URL=https://embeddings.example.com"],
    "serverless": ["jsonpath='{.status.url}'"],
}


# Helm 4 only: Helm 3's `install --dry-run=client` still contacts a cluster.
@pytest.mark.parametrize("vid", sorted(NOTES))
def test_notes_print_url_and_curl(vid):
    proc = run_helm("helm4", "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                    "-f", str(CHART / "ci" / f"{vid}-values.yaml"))
    notes = proc.stdout.split("NOTES:", 1)[1]
    for text in NOTES[vid]:
        assert text in notes, notes
    assert '"$SNAPSERVE_URL/v1/models/snapserve:predict"' in notes
    assert """-d '{"instances": ["hello world"]}'""" in notes
    assert ("SNAPSERVE_API_KEY" in notes) == (vid == "auth"), notes


@pytest.mark.parametrize("helm_name", HELM_NAMES)
def test_kube_version_floor(helm_name):
    """kubeVersion >=1.30: preStop `sleep` hooks are on by default from 1.30."""
    run_helm(helm_name, *("template", RELEASE, str(CHART), "--kube-version", "1.30.0"))
    proc = run_helm(helm_name, *("template", RELEASE, str(CHART), "--kube-version", "1.29.0"), check=False)
    assert proc.returncode != 0 and "kubeVersion" in proc.stderr, proc.stderr


@pytest.mark.parametrize(("values", "route"), [("rerank", "/v1/rerank"), ("generation", "/openai/v1/chat/completions"),
                                               ("defaults", "/openai/v1/embeddings")])
def test_notes_print_a_curl_for_the_task(values, route):
    notes = run_helm("helm4", "install", "snapserve", str(CHART), "--dry-run=client", "-f",
                     str(CHART / "ci" / f"{values}-values.yaml"))
    assert f'"$SNAPSERVE_URL{route}"' in notes.stdout
