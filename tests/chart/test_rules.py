"""The one rules file: promtool-valid, embedded unchanged, and naming only metrics the servers export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml

from tests.chart.chart_tools import CHART, find, render

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
METRIC = re.compile(r"\bsnapserve_[a-zA-Z0-9_]+")


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
                   "snapserve:gpu_memory_used:ratio"):
        assert needle in exprs, needle
    for alert in alerts.values():
        assert len(alert["annotations"]["runbook"].split()) > 20, alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}
    assert any("record" in r for r in rules)


def test_dashboard_has_the_panels():
    dash = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for word in ("throughput", "p99", "batch size", "queue wait", "errors", "gpu memory"):
        assert word in titles, word
    cm = find(render("helm4", CHART / "ci" / "monitoring-values.yaml"), "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["snapserve.json"]) == dash


def referenced_metrics() -> dict[str, set[str]]:
    rules = RULES.read_text()
    dash = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    return {"rules": set(METRIC.findall(rules)), "dashboard": set(METRIC.findall(" ".join(dash)))}


def exportable_names(text: str) -> set[str]:
    """Sample names a /metrics page exports or will export once a labelled series exists."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                "gauge": [""], "summary": ["", "_sum", "_count", "_created"]}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in suffixes.get(family.type, [""])}
        names |= {s.name for s in family.samples}
    return names


def get(url: str, data: bytes | None = None) -> bytes:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_named_metric_is_exported_by_the_servers(servers, source):
    # One real request through transformer and predictor, so labelled series exist.
    body = json.dumps({"instances": ["hello world"]}).encode()
    preds = json.loads(get(f"{servers.transformer_url}/v1/models/{servers.model_name}:predict", body))
    assert len(preds["predictions"][0]) == 384
    exported = set()
    for url in (servers.predictor_url, servers.transformer_url):
        exported |= exportable_names(get(f"{url}/metrics").decode())
    wanted = referenced_metrics()[source]
    assert wanted, f"no snapserve_* metric named in the {source}"
    missing = sorted(wanted - exported)
    assert not missing, f"{source} names metrics no server exports: {missing}"
