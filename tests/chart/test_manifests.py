"""manifests/ (from the chart) and the chart's values.schema.json and README.md (from values.yaml) are
generated and must not be stale."""

from __future__ import annotations

import subprocess

import yaml

from tests.chart.chart_tools import ROOT, helm

MANIFESTS = ROOT / "manifests"
GENERATOR = ROOT / ".tools" / "node" / "node_modules" / "@bitnami" / "readme-generator-for-helm"


def test_manifests_are_not_stale():
    helm("helm4")
    proc = subprocess.run(["bash", str(ROOT / "ci" / "render-manifests.sh"), "--check"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_values_schema_and_chart_readme_are_not_stale():
    assert GENERATOR.is_dir(), f"{GENERATOR} missing: run `bash ci/setup.d/60-node.sh` (make test does)"
    proc = subprocess.run(["bash", str(ROOT / "ci" / "render-chart-docs.sh"), "--check"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_manifests_hold_the_default_and_gpu_variants():
    default = [d for d in yaml.safe_load_all((MANIFESTS / "snapserve.yaml").read_text()) if d]
    gpu = [d for d in yaml.safe_load_all((MANIFESTS / "snapserve-gpu.yaml").read_text()) if d]
    for docs in (default, gpu):
        kinds = {d["kind"] for d in docs}
        assert {"InferenceService", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
        assert "Pod" not in kinds, "the helm test pod must not be in plain manifests"
    limits = lambda docs: next(d for d in docs if d["kind"] == "InferenceService")[
        "spec"]["predictor"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits(default)
    assert limits(gpu)["nvidia.com/gpu"] == 1
