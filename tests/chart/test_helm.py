"""helm lint / template with Helm 3 and Helm 4, the values schema, render-time failures, NOTES."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.chart_tools import (
    CHART,
    CI_VALUES,
    HELMS,
    NAMESPACE,
    RELEASE,
    collocated,
    component_container,
    component_pod,
    find,
    predictor_port,
    render,
    render_error,
    run_helm,
    template_args,
    values_id,
)
from tests.chart.test_values import VALUES, merged

HELM_NAMES = sorted(HELMS)
CASES = [pytest.param(h, v, id=f"{h}-{values_id(v)}") for v in CI_VALUES for h in HELM_NAMES]


def test_every_feature_has_a_ci_values_file():
    expected = {"defaults", "gpu", "gateway", "ingress-tls", "monitoring", "autoscaling", "serverless", "everything",
                "auth", "rerank", "generation", "generation-cpu", "scale-to-zero", "inference-pool"}
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
    "transformer-zero-with-keda": (("kserve.autoscalerClass=keda", "transformer.autoscaling.minReplicas=0"),
                                   ["transformer.autoscaling.minReplicas", "activator", "1 or more"]),
    "predictor-zero-with-hpa": (("predictor.autoscaling.minReplicas=0",),
                                ["predictor.autoscaling.minReplicas=0", "kserve.autoscalerClass=keda", "not hpa"]),
    "predictor-zero-with-external": (("kserve.autoscalerClass=external", "predictor.autoscaling.minReplicas=0"),
                                     ["kserve.autoscalerClass=keda", "not external", "kserve.deploymentMode=Knative"]),
    "predictor-zero-with-unready-transformers": (("kserve.autoscalerClass=keda", "predictor.autoscaling.minReplicas=0"),
                                                 ["transformer.timeouts.predictorUnreadyAfterSeconds=0"]),
    "predictor-zero-collocated": (("kserve.autoscalerClass=keda", "predictor.autoscaling.minReplicas=0",
                                   "transformer.timeouts.predictorUnreadyAfterSeconds=0", "collocated=true"),
                                  ["collocated=false", "predictor.autoscaling.minReplicas"]),
    "keda-query-without-target": (("kserve.autoscalerClass=keda", "predictor.autoscaling.keda.query=sum(x)"),
                                  ["predictor.autoscaling.keda.targetValue"]),
    "collocated-in-knative": (("kserve.deploymentMode=Knative", "collocated=true"),
                              ["collocated=true", "kserve.deploymentMode=Standard"]),
    "pool-without-collocation": (("predictor.task=generate", "inferencePool.enabled=true",
                                  "inferencePool.endpointPicker.name=epp"), ["inferencePool.enabled", "collocated=true"]),
    "pool-for-embeddings": (("collocated=true", "inferencePool.enabled=true", "inferencePool.endpointPicker.name=epp"),
                            ["predictor.task=generate"]),
    "pool-without-epp": (("predictor.task=generate", "collocated=true", "inferencePool.enabled=true"),
                         ["inferencePool.endpointPicker.name"]),
    "pool-behind-ingress": (("predictor.task=generate", "collocated=true", "inferencePool.enabled=true",
                             "inferencePool.endpointPicker.name=epp", "ingress.enabled=true"),
                            ["ingress.enabled=false", "httpRoute.enabled=true"]),
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
    transformer = component_container(isvc, "transformer")
    together = collocated(isvc)  # KServe's names: transformer-container beside kserve-container in one pod
    assert predictor["name"] == "kserve-container"
    assert transformer["name"] == ("transformer-container" if together else "kserve-container")
    assert predictor["command"] == ["python", "-m", "predictor"]
    assert transformer["command"] == ["python", "-m", "transformer"]
    pargs, targs = predictor["args"], transformer["args"]
    # The transformer calls /v1|v2/models/<its --model_name>: KServe appends the isvc name when the chart
    # passes none, and the chart passes one only when modelName differs. The predictor must serve that name.
    model = targs[targs.index("--model_name") + 1] if "--model_name" in targs else name
    assert pargs[pargs.index("--model_name") + 1] == model
    # KServe injects nothing into a collocated transformer container: it names the model itself.
    assert ("--model_name" in targs) == (model != name or together)
    port = predictor_port(isvc)
    for flag, value in (("--model_dir", "/mnt/models"), ("--http_port", "8080"), ("--grpc_port", "8081")):
        assert targs[targs.index(flag) + 1] == value
    for flag, value in (("--model_dir", "/mnt/models"), ("--http_port", str(port)), ("--grpc_port", str(port + 1))):
        assert pargs[pargs.index(flag) + 1] == value
    assert ("--predictor_host" in targs) == together
    if together:
        assert targs[targs.index("--predictor_host") + 1] == f"localhost:{port}"
        assert predictor["ports"][0]["containerPort"] == port and transformer["ports"][0]["containerPort"] == 8080
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
        spec = component_pod(isvc, comp)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        if mode == "Standard":
            pre_stop = component_container(isvc, comp)["lifecycle"]["preStop"]["sleep"]["seconds"]
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
    assert metric["type"] == "External" and "snapserve_estimated_wait_seconds" in metric["external"]["metric"]["query"]
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


CHAT_ROUTE, EMBED_ROUTES = "/openai/v1/chat/completions", ("/openai/v1/embeddings", "/v1/models/snapserve:predict")


@pytest.mark.parametrize(("values", "route"), [("rerank", "/v1/rerank"), ("generation", CHAT_ROUTE),
                                               ("generation-cpu", CHAT_ROUTE), ("defaults", "/openai/v1/embeddings")])
def test_notes_print_a_curl_for_the_task(values, route):
    notes = run_helm("helm4", "install", "snapserve", str(CHART), "--dry-run=client", "-f",
                     str(CHART / "ci" / f"{values}-values.yaml")).stdout.split("NOTES:", 1)[1]
    assert f'"$SNAPSERVE_URL{route}"' in notes
    chat = route == CHAT_ROUTE
    assert (f'"$SNAPSERVE_URL{CHAT_ROUTE}"' in notes) == chat
    for embed in EMBED_ROUTES:
        assert (f'"$SNAPSERVE_URL{embed}"' in notes) == (values == "defaults"), notes
    if chat:  # greedy, so the printed curl answers the same every time
        assert '"temperature": 0' in notes and '"model": "snapserve"' in notes, notes
        assert "greedy chat completion" in notes  # what `helm test` checks


# -- the helm test pod follows the task ---------------------------------------------------------------

def effective(values) -> dict:
    return merged(yaml.safe_load(VALUES.read_text()), yaml.safe_load(values.read_text()) or {})


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_helm_test_pod_follows_the_task(values):
    """The embedding test for encoders, the chat test for predictor.task=generate, never both."""
    v = effective(values)
    pods = sorted(d["metadata"]["name"] for d in render("helm4", values) if d["kind"] == "Pod")
    if not v["helmTest"]["enabled"]:
        assert pods == []
    elif v["predictor"]["task"] == "generate":
        assert pods == [f"{RELEASE}-test-chat"]
    else:
        assert pods == [f"{RELEASE}-test-embedding"]


def test_chat_test_pod_is_built_like_the_embedding_one():
    chat = find(render("helm4", CHART / "ci" / "generation-values.yaml"), "Pod", "-test-chat")
    embed = find(render("helm4"), "Pod", "-test-embedding")
    assert chat["metadata"]["annotations"] == embed["metadata"]["annotations"]
    assert chat["metadata"]["labels"] == embed["metadata"]["labels"]
    for key in ("restartPolicy", "serviceAccountName", "automountServiceAccountToken", "securityContext"):
        assert chat["spec"][key] == embed["spec"][key], key
    c, e = chat["spec"]["containers"][0], embed["spec"]["containers"][0]
    assert c["image"].rsplit(":", 1)[0] == e["image"].rsplit(":", 1)[0]  # the transformer image
    for key in ("imagePullPolicy", "command", "resources", "securityContext"):
        assert c[key] == e[key], key
    env = {x["name"]: x["value"] for x in c["env"]}
    assert env["BASE_URL"] == f"http://{RELEASE}-transformer.{NAMESPACE}.svc.cluster.local"
    assert env["MODEL_NAME"] == RELEASE and env["MAX_TOKENS"] == "16"
    script = c["args"][0]
    assert '"/openai/v1/chat/completions"' in script and '"temperature": 0' in script
    assert 'choice.get("finish_reason")' in script and "content.strip()" in script
    compile(script, "test-chat", "exec")


# -- the chat example on CPU nodes ----------------------------------------------------------------------

def render_files(*names: str) -> list[dict]:
    args = template_args()
    for name in names:
        args += ["-f", str(CHART / "ci" / f"{name}-values.yaml")]
    return [d for d in yaml.safe_load_all(run_helm("helm4", *args).stdout) if d]


@pytest.mark.parametrize("files", [("generation-cpu",), ("generation", "generation-cpu")], ids=["alone", "layered"])
def test_chat_on_cpu_renders_no_gpu(files):
    """Alone or after the GPU chat file (Helm merges maps: its nodeSelector must go, not merge)."""
    docs = render_files(*files)
    pred = find(docs, "InferenceService")["spec"]["predictor"]
    container = pred["containers"][0]
    args = container["args"]
    assert args[args.index("--task") + 1] == "generate" and args[args.index("--device") + 1] == "cpu"
    assert "gpu" not in str(container["resources"]).lower()
    for key in ("nodeSelector", "tolerations", "runtimeClassName", "affinity"):
        assert key not in pred, (key, pred.get(key))
    find(docs, "Pod", "-test-chat")
    assert docs == render_files("generation-cpu")  # it restates every key the GPU chat file sets


def test_gpu_chat_example_keeps_its_gpu():
    pred = find(render("helm4", CHART / "ci" / "generation-values.yaml"), "InferenceService")["spec"]["predictor"]
    assert pred["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pred["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pred["tolerations"]


# -- the model name is the one chosen ------------------------------------------------------------------

@pytest.mark.parametrize("values", ["defaults", "generation", "gateway", "auth"])
def test_the_chosen_model_name_is_served_everywhere(values):
    """modelName reaches both servers' --model_name, the helm test and the NOTES; resource names, the
    Services KServe names after the InferenceService and the route's backend stay as they were."""
    from transformer import config as tconfig

    from tests.chart.test_server_args import kserve_transformer_args

    file, model = CHART / "ci" / f"{values}-values.yaml", "My-model.v2"
    sets = (f"modelName={model}", "helmTest.enabled=true")
    docs = render("helm4", file, sets)
    plain = render("helm4", file, ("helmTest.enabled=true",))
    isvc = find(docs, "InferenceService")
    assert isvc["metadata"]["name"] == find(plain, "InferenceService")["metadata"]["name"] == RELEASE
    pargs = isvc["spec"]["predictor"]["containers"][0]["args"]
    targs = kserve_transformer_args(isvc["spec"]["transformer"]["containers"][0]["args"], RELEASE)
    assert pargs[pargs.index("--model_name") + 1] == model
    assert tconfig.load(targs).model_name == model
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}["MODEL_NAME"] == model
    for kind in ("HTTPRoute", "Ingress"):
        if any(d["kind"] == kind for d in plain):
            assert find(docs, kind) == find(plain, kind)  # routes go to the transformer Service, by host
    notes = run_helm("helm4", "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                     "-f", str(file), "--set", sets[0]).stdout.split("NOTES:", 1)[1]
    assert f'model name "{model}"' in notes and f'inferenceservice/{RELEASE} ' in notes
    if effective(file)["predictor"]["task"] == "generate":
        assert f'"model": "{model}"' in notes
    else:
        assert f'"$SNAPSERVE_URL/v1/models/{model}:predict"' in notes and f'"model": "{model}"' in notes
    assert '"model": "snapserve"' not in notes and "/models/snapserve:" not in notes


@pytest.mark.parametrize("bad", ["a/b", "name:predict", "-x", "with space"])
def test_model_name_must_fit_in_a_url_path(bad):
    err = render_error("helm4", sets=(f"modelName={bad}",))
    assert "modelName" in err, err
