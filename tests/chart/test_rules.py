"""The one rules file: promtool-valid, embedded unchanged, and naming only metrics the servers export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml

from snapserve import metrics
from tests import procs
from tests.chart.chart_tools import CHART, find, render

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
METRIC = re.compile(r"\bsnapserve_[a-zA-Z0-9_]+")
GEN_DIR = procs.ROOT / "models" / "SmolLM2-135M-Instruct"
SUFFIXES = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
            "gauge": [""], "summary": ["", "_sum", "_count", "_created"]}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: ci/setup.d/10-apt.sh installs Debian's prometheus package"
    return path


def test_promtool_checks_the_rules_file():
    proc = subprocess.run([promtool(), "check", "rules", str(RULES)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_checks_the_rendered_prometheusrule(tmp_path):
    rule = find(render("helm4", CHART / "ci" / "monitoring-values.yaml"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    path = tmp_path / "rendered-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([promtool(), "check", "rules", str(path)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_cover_the_required_conditions_with_runbooks():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    exprs = " ".join(a["expr"] for a in alerts.values())
    for needle in ("snapserve:request_duration_seconds:p99_5m", "snapserve:requests_failed:ratio_rate5m",
                   "snapserve:queue_depth:max", 'up{component=~"predictor|transformer"}',
                   "snapserve:gpu_memory_used:ratio", "snapserve:time_to_first_token_seconds:p99_5m",
                   "snapserve:kv_cache_usage:ratio", "snapserve:num_preemptions:rate5m",
                   "snapserve:num_requests_waiting:max"):
        assert needle in exprs, needle
    for alert in alerts.values():
        assert len(alert["annotations"]["runbook"].split()) > 20, alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}
    assert any("record" in r for r in rules)


def test_dashboard_has_the_panels():
    dash = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for word in ("throughput", "p99", "batch size", "queue wait", "errors", "gpu memory", "time to first token",
                 "inter-token latency", "tokens/s", "running vs waiting", "kv cache", "preemptions", "estimated wait",
                 "requests held"):
        assert word in titles, word
    # the generation row (issue 23): TTFT, ITL, tokens/s, running, waiting, KV usage, each charted
    charted = referenced_metrics()["dashboard"]
    for name in ("snapserve_time_to_first_token_seconds_bucket", "snapserve_inter_token_latency_seconds_bucket",
                 "snapserve_generation_tokens_total", "snapserve_num_requests_running",
                 "snapserve_num_requests_waiting", "snapserve_kv_cache_usage_perc"):
        assert name in charted, name
    cm = find(render("helm4", CHART / "ci" / "monitoring-values.yaml"), "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["snapserve.json"]) == dash


def test_the_dashboard_charts_what_the_autoscalers_query():
    """Every snapserve_* metric a rendered autoscaler queries (the ScaledObject's triggers, KServe's KEDA
    metric for either task) has a panel, so an operator sees what the scaler sees."""
    queried = set()
    for sets in ((), ("predictor.task=generate",)):
        for doc in render("helm4", CHART / "ci" / "scale-to-zero-values.yaml", sets) + render(
                "helm4", None, ("kserve.autoscalerClass=keda", *sets)):
            if doc["kind"] in ("ScaledObject", "InferenceService"):
                queried |= set(METRIC.findall(json.dumps(doc)))
    assert {"snapserve_estimated_wait_seconds", "snapserve_requests_awaiting_predictor"} <= queried, queried
    missing = sorted(queried - referenced_metrics()["dashboard"])
    assert not missing, f"autoscaler metrics without a dashboard panel: {missing}"


def referenced_metrics() -> dict[str, set[str]]:
    rules = RULES.read_text()
    dash = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    return {"rules": set(METRIC.findall(rules)), "dashboard": set(METRIC.findall(" ".join(dash)))}


def exportable_names(text: str) -> set[str]:
    """Sample names a /metrics page exports or will export once a labelled series exists."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in SUFFIXES.get(family.type, [""])}
        names |= {s.name for s in family.samples}
    return names


def generation_families() -> dict[str, set[str]]:
    """Sample names per family of the generate task's metrics (``GEN_*`` in snapserve/metrics.py)."""
    collectors = [getattr(metrics, name) for name in dir(metrics) if name.startswith("GEN_")]
    return {f.name: {f.name + s for s in SUFFIXES[f.type]} for c in collectors for f in c.describe()}


def generation_names() -> set[str]:
    return set().union(*generation_families().values())


def get(url: str, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


@pytest.fixture(scope="module")
def generation_scrape(tmp_path_factory) -> str:
    """/metrics of a real generation predictor after one real /generate request."""
    if not (GEN_DIR / "model.safetensors").is_file():
        pytest.fail(f"generative model missing at {GEN_DIR}: run `bash ci/setup.d/35-model-generate.sh`")
    predictor, _ = procs.start_predictor(model_name="smol", model_dir=GEN_DIR, timeout=300,
                                         log_dir=tmp_path_factory.mktemp("generation-logs"))
    try:
        body = json.dumps({"text_input": "The capital of France is", "parameters": {"max_tokens": 4}}).encode()
        answer = json.loads(get(f"{predictor.url}/v2/models/smol/generate", body))
        assert answer["usage"]["completion_tokens"] >= 1, answer
        return get(f"{predictor.url}/metrics").decode()
    finally:
        predictor.stop()


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_generation_metrics_are_exported_by_a_generation_predictor(generation_scrape, source):
    # the request went through the engine, so the histograms and counters hold real observations
    for name in ("snapserve_time_to_first_token_seconds_count", "snapserve_e2e_request_latency_seconds_count",
                 "snapserve_prompt_tokens_total", "snapserve_generation_tokens_total"):
        assert sample(generation_scrape, name) >= 1, name
    wanted = referenced_metrics()[source] & generation_names()
    assert wanted, f"no generation metric named in the {source}"
    if source == "dashboard":  # the generation row charts every one of them
        uncharted = sorted(f for f, names in generation_families().items() if not names & wanted)
        assert not uncharted, f"generation metrics without a dashboard panel: {uncharted}"
    missing = sorted(wanted - exportable_names(generation_scrape))
    assert not missing, f"{source} names generation metrics a generation predictor does not export: {missing}"


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_named_metric_is_exported_by_the_servers(servers, source):
    # One real request through transformer and predictor, so labelled series exist.
    body = json.dumps({"instances": ["hello world"]}).encode()
    preds = json.loads(get(f"{servers.transformer_url}/v1/models/{servers.model_name}:predict", body))
    assert len(preds["predictions"][0]) == 384
    exported = set()
    for url in (servers.predictor_url, servers.transformer_url):
        exported |= exportable_names(get(f"{url}/metrics").decode())
    wanted = referenced_metrics()[source] - generation_names()  # those: the generation predictor's test
    assert wanted, f"no snapserve_* metric named in the {source}"
    missing = sorted(wanted - exported)
    assert not missing, f"{source} names metrics no server exports: {missing}"
