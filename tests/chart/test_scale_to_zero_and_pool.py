"""Issue 23, chart side: the KEDA query follows the task, scale to zero in Standard mode with the
transformers as the activator (the chart's ScaledObject), and the InferencePool over collocated pods."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.chart_tools import CHART, NAMESPACE, RELEASE, component_container, find, render

SCALE_TO_ZERO = CHART / "ci" / "scale-to-zero-values.yaml"
POOL = CHART / "ci" / "inference-pool-values.yaml"
AUTOSCALING = CHART / "ci" / "autoscaling-values.yaml"
RELEASE_LABELS = f'namespace="{NAMESPACE}", inferenceservice="{RELEASE}"'


def keda_metric(isvc: dict, component: str) -> dict:
    (metric,) = isvc["spec"][component]["autoScaling"]["metrics"]
    return metric["external"]


# -- 1. the default query follows the task --------------------------------------------------------------

@pytest.mark.parametrize("task,target", [("auto", "0.5"), ("embedding", "0.5"), ("generate", "10")])
def test_default_keda_query_is_the_estimated_wait_of_this_release(task, target):
    isvc = find(render("helm4", AUTOSCALING, (f"predictor.task={task}",)), "InferenceService")
    ext = keda_metric(isvc, "predictor")
    assert ext["metric"]["query"] == (
        f'sum(snapserve_estimated_wait_seconds{{component="predictor", {RELEASE_LABELS}}})')
    assert ext["target"] == {"type": "Value", "value": target}
    # the transformer keeps its own query
    assert "snapserve_requests_total" in keda_metric(isvc, "transformer")["metric"]["query"]


def test_an_explicit_keda_query_still_wins(tmp_path):
    query = 'sum(snapserve_num_requests_waiting{component="predictor", namespace="ns"})'
    own = tmp_path / "own-query.yaml"
    own.write_text(yaml.safe_dump({"kserve": {"autoscalerClass": "keda"}, "predictor": {
        "task": "generate", "autoscaling": {"keda": {"query": query, "targetValue": "4"}}}}))
    isvc = find(render("helm4", own), "InferenceService")
    ext = keda_metric(isvc, "predictor")
    assert ext["metric"]["query"] == query and ext["target"]["value"] == "4"


def test_the_chat_alternatives_are_documented_where_the_query_is():
    text = (CHART / "values.yaml").read_text()
    block = text[text.index("    keda:\n      ## @param predictor.autoscaling.keda.query"):]
    block = block[:block.index("targetValue:")]
    for metric in ("snapserve_estimated_wait_seconds", "snapserve_num_requests_waiting", "snapserve_kv_cache_usage_perc"):
        assert metric in block, metric


# -- 2. scale to zero in Standard mode ---------------------------------------------------------------------

def test_scale_to_zero_renders_one_scaledobject_for_the_predictor_deployment():
    docs = render("helm4", SCALE_TO_ZERO)
    so = find(docs, "ScaledObject")
    spec = so["spec"]
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["metadata"]["name"] == f"{RELEASE}-predictor"
    # KServe names the predictor's Deployment <InferenceService>-predictor in Standard mode
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-predictor"}
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] == 4
    assert spec["pollingInterval"] == 5 and spec["cooldownPeriod"] == 600
    load, held = spec["triggers"]
    assert load["type"] == held["type"] == "prometheus"
    assert load["metadata"]["query"] == (
        f'sum(snapserve_estimated_wait_seconds{{component="predictor", {RELEASE_LABELS}}})')
    assert load["metadata"]["threshold"] == "0.5"
    assert held["metadata"]["query"] == (
        f'sum(snapserve_requests_awaiting_predictor{{component="transformer", {RELEASE_LABELS}}})')
    assert held["metadata"]["threshold"] == "8" and held["metadata"]["activationThreshold"] == "0"
    assert load["metadata"]["serverAddress"] == held["metadata"]["serverAddress"].rstrip("/")


def test_kserve_makes_no_second_autoscaler_for_the_predictor():
    isvc = find(render("helm4", SCALE_TO_ZERO), "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    pred, trans = isvc["spec"]["predictor"], isvc["spec"]["transformer"]
    # the component's annotation wins over the InferenceService's (KServe predictor.go buildObjectMeta)
    assert pred["annotations"] == {"serving.kserve.io/autoscalerClass": "external"}
    assert "autoScaling" not in pred and pred["minReplicas"] == 0
    assert trans["minReplicas"] >= 1 and "autoScaling" in trans and "annotations" not in trans


def test_scale_to_zero_for_chat_targets_seconds_of_chat_wait():
    so = find(render("helm4", SCALE_TO_ZERO, ("predictor.task=generate",)), "ScaledObject")
    assert so["spec"]["triggers"][0]["metadata"]["threshold"] == "10"


def test_the_activator_outlives_a_cold_start():
    """The transformers stay Ready at zero and hold a request longer than a cold start takes."""
    docs = render("helm4", SCALE_TO_ZERO)
    env = {e["name"]: e.get("value") for e in component_container(find(docs, "InferenceService"), "transformer")["env"]}
    assert env["PREDICTOR_UNREADY_AFTER_S"] == "0"
    assert int(env["REQUEST_TIMEOUT_MS"]) >= 120_000
    route = find(docs, "HTTPRoute")["spec"]["rules"][0]["timeouts"]
    assert int(route["request"].removesuffix("s")) * 1000 > int(env["REQUEST_TIMEOUT_MS"])


@pytest.mark.parametrize("values", [None, AUTOSCALING, CHART / "ci" / "serverless-values.yaml"])
def test_no_scaledobject_unless_the_predictor_scales_to_zero_in_standard_mode(values):
    assert not [d for d in render("helm4", values) if d["kind"] == "ScaledObject"]


# -- 3. collocation and the InferencePool --------------------------------------------------------------------

def test_inference_pool_selects_the_collocated_chat_pods_and_names_the_epp():
    docs = render("helm4", POOL)
    pool = find(docs, "InferencePool")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": RELEASE, "component": "predictor",
        "inference.networking.k8s.io/engine-type": "snapserve"}
    assert pool["spec"]["targetPorts"] == [{"number": 8080}]
    assert pool["spec"]["endpointPickerRef"] == {"name": "snapserve-epp", "port": {"number": 9002},
                                                 "failureMode": "FailClose"}
    pred = find(docs, "InferenceService")["spec"]["predictor"]
    # the pods the pool selects carry every label it matches (KServe adds the component and isvc labels)
    assert pred["labels"] == {"inference.networking.k8s.io/engine-type": "snapserve"}
    (backend,) = find(docs, "HTTPRoute")["spec"]["rules"][0]["backendRefs"]
    assert backend == {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": RELEASE}


def test_collocated_pod_is_one_engine_behind_one_endpoint():
    docs = render("helm4", POOL, ("model.storageUri=pvc://models/chat",))
    isvc = find(docs, "InferenceService")
    assert "transformer" not in isvc["spec"]
    names = [c["name"] for c in isvc["spec"]["predictor"]["containers"]]
    assert names == ["kserve-container", "transformer-container"]
    t = component_container(isvc, "transformer")
    # KServe refuses STORAGE_URI in the transformer container; its storage initializer mounts /mnt/models there
    assert "STORAGE_URI" not in {e["name"] for e in t["env"]}
    assert "STORAGE_URI" in {e["name"] for e in isvc["spec"]["predictor"]["containers"][0]["env"]}
    assert "nvidia.com/gpu" not in str(t["resources"])
    monitor = find(render("helm4", POOL, ("podMonitor.enabled=true",)), "PodMonitor")
    ports = {e["port"]: e["relabelings"][0]["replacement"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert ports == {"http1": "transformer", "http-predictor": "predictor"}


def test_collocated_clients_and_tests_use_the_predictor_service():
    docs = render("helm4", CHART / "ci" / "generation-values.yaml", ("collocated=true", "ingress.enabled=true"))
    ingress = find(docs, "Ingress")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == f"{RELEASE}-predictor"
    env = {e["name"]: e.get("value") for e in find(docs, "Pod", "-test-chat")["spec"]["containers"][0]["env"]}
    assert env["BASE_URL"] == f"http://{RELEASE}-predictor.{NAMESPACE}.svc.cluster.local"
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"] == [f"{RELEASE}-predictor"]
    policy = find(docs, "NetworkPolicy", "-predictor")
    assert policy["spec"]["ingress"][0] == {"ports": [{"port": 8080, "protocol": "TCP"}]}
