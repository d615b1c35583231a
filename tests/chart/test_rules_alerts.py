"""promtool unit tests: each alert fires on the condition it names and stays quiet without it.

promtool compares annotations verbatim, so the alerts run from a copy without annotations; the
annotation templates themselves are checked by `promtool check rules` (test_rules.py).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.chart.chart_tools import CHART

RULES = CHART / "files" / "prometheus-rules.yaml"

REQ = 'snapserve_requests_total{component="transformer",outcome="%s"}'
BUCKET = 'snapserve_request_duration_seconds_bucket{component="transformer",le="%s"}'
DEPTH = 'snapserve_queue_depth{component="predictor",pod="p1"}'
UP = 'up{component="predictor",instance="%s"}'
GPU = 'snapserve_gpu_memory_%s_bytes{component="predictor",pod="p1",instance="i1"}'
TTFT = 'snapserve_time_to_first_token_seconds_bucket{component="predictor",le="%s"}'
POD = '{component="predictor",pod="p1",instance="i1"}'
KV = "snapserve_kv_cache_usage_perc" + POD
PREEMPT = "snapserve_num_preemptions_total" + POD
WAITING = "snapserve_num_requests_waiting" + POD
ON_POD = {"severity": "warning", "component": "predictor", "pod": "p1", "instance": "i1"}

# name: (series {selector: values}, eval time, alert, expected label sets or [] for "must not fire")
CASES = {
    "errors-5pct-fire": ({REQ % "ok": "0+95x40", REQ % "error": "0+5x40"}, "25m", "SnapserveErrorRatioHigh",
                         [{"severity": "critical", "component": "transformer"}]),
    "rejections-count": ({REQ % "ok": "0+90x40", REQ % "rejected": "0+10x40"}, "25m", "SnapserveErrorRatioHigh",
                         [{"severity": "critical", "component": "transformer"}]),
    "client-errors-quiet": ({REQ % "ok": "0+50x40", REQ % "client_error": "0+50x40"}, "25m",
                            "SnapserveErrorRatioHigh", []),
    "errors-half-pct-quiet": ({REQ % "ok": "0+995x40", REQ % "error": "0+5x40"}, "25m",
                              "SnapserveErrorRatioHigh", []),
    "slow-p99-fire": ({BUCKET % "0.25": "0+50x40", BUCKET % "1": "0+100x40", BUCKET % "+Inf": "0+100x40"}, "25m",
                      "SnapserveLatencyP99OverSLO", [{"severity": "warning", "component": "transformer"}]),
    "fast-p99-quiet": ({BUCKET % "0.25": "0+100x40", BUCKET % "1": "0+100x40", BUCKET % "+Inf": "0+100x40"}, "25m",
                       "SnapserveLatencyP99OverSLO", []),
    "queue-growing-fire": ({DEPTH: "300+10x40"}, "25m", "SnapserveQueueDepthGrowing",
                           [{"severity": "warning", "component": "predictor"}]),
    "queue-flat-quiet": ({DEPTH: "300x40"}, "25m", "SnapserveQueueDepthGrowing", []),
    "queue-small-quiet": ({DEPTH: "0+1x40"}, "25m", "SnapserveQueueDepthGrowing", []),
    "one-replica-down": ({UP % "a": "1x40", UP % "b": "0x40"}, "10m", "SnapserveReplicasDown",
                         [{"severity": "warning", "component": "predictor"}]),
    "all-up-quiet": ({UP % "a": "1x40", UP % "b": "1x40"}, "10m", "SnapserveReplicasDown", []),
    "none-up": ({UP % "a": "0x40", UP % "b": "0x40"}, "5m", "SnapserveNoReplicaUp",
                [{"severity": "critical", "component": "predictor"}]),
    "gpu-95pct-fire": ({GPU % "used": "95000000000x40", GPU % "total": "100000000000x40"}, "15m",
                       "SnapserveGPUMemoryNearFull",
                       [{"severity": "warning", "component": "predictor", "pod": "p1", "instance": "i1"}]),
    "gpu-50pct-quiet": ({GPU % "used": "50000000000x40", GPU % "total": "100000000000x40"}, "15m",
                        "SnapserveGPUMemoryNearFull", []),
    "cpu-zero-total-quiet": ({GPU % "used": "0x40", GPU % "total": "0x40"}, "15m", "SnapserveGPUMemoryNearFull", []),
    # text generation
    "ttft-slow-fire": ({TTFT % "1": "0+50x40", TTFT % "5": "0+100x40", TTFT % "+Inf": "0+100x40"}, "25m",
                       "SnapserveTimeToFirstTokenP99High", [{"severity": "warning", "component": "predictor"}]),
    "ttft-fast-quiet": ({TTFT % "1": "0+100x40", TTFT % "5": "0+100x40", TTFT % "+Inf": "0+100x40"}, "25m",
                        "SnapserveTimeToFirstTokenP99High", []),
    "kv-95pct-fire": ({KV: "0.95x40"}, "15m", "SnapserveKVCacheNearFull", [ON_POD]),
    "kv-95pct-brief-quiet": ({KV: "0.5x10 0.95x30"}, "15m", "SnapserveKVCacheNearFull", []),
    "kv-half-quiet": ({KV: "0.5x40"}, "15m", "SnapserveKVCacheNearFull", []),
    "preemptions-sustained-fire": ({PREEMPT: "0+6x40"}, "25m", "SnapservePreemptionsSustained", [ON_POD]),
    "preemptions-rare-quiet": ({PREEMPT: "0+1x40"}, "25m", "SnapservePreemptionsSustained", []),
    "preemptions-burst-quiet": ({PREEMPT: "0x10 100x30"}, "25m", "SnapservePreemptionsSustained", []),
    "waiting-growing-fire": ({WAITING: "40+2x40"}, "25m", "SnapserveGenerationRequestsPilingUp", [ON_POD]),
    "waiting-flat-quiet": ({WAITING: "40x40"}, "25m", "SnapserveGenerationRequestsPilingUp", []),
    "waiting-few-quiet": ({WAITING: "0+0.5x40"}, "25m", "SnapserveGenerationRequestsPilingUp", []),
}


@pytest.fixture(scope="module")
def rules_without_annotations(tmp_path_factory):
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def test_every_alert_has_a_firing_case():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {alert for _, _, alert, expected in CASES.values() if expected}


@pytest.mark.parametrize("case", sorted(CASES))
def test_alert(case, rules_without_annotations, tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: ci/setup.d/10-apt.sh installs Debian's prometheus package"
    series, at, alert, expected = CASES[case]
    test = {
        "rule_files": [str(rules_without_annotations)],
        "evaluation_interval": "30s",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                 "exp_alerts": [{"exp_labels": labels} for labels in expected]}],
        }],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run([promtool, "test", "rules", str(path)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
