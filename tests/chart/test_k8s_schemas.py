"""Rendered manifests against Kubernetes' own schemas (core kinds) and the upstream CRDs (custom kinds)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.chart.chart_tools import CI_VALUES, K8S_VERSIONS, crd_errors, find, is_custom, render, values_id


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_core_kinds_validate_strictly(values, k8s_version):
    core = [d for d in render("helm4", values) if not is_custom(d)]
    assert core, "no core kinds rendered"
    for doc in core:
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {k8s_version}: {e.message}")


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_custom_resources_match_crds_strictly(values):
    docs = render("helm4", values)
    custom = [d for d in docs if is_custom(d)]
    unknown = [d["kind"] for d in docs if "." in d["apiVersion"].split("/")[0] and not is_custom(d)
               and not d["apiVersion"].startswith(("networking.k8s.io/", "policy/"))]
    assert not unknown, f"custom kinds without a CRD to check against: {unknown}"
    for doc in custom:
        errors = crd_errors(doc)
        assert not errors, f"{doc['kind']}/{doc['metadata']['name']}:\n" + "\n".join(errors[:20])


def test_every_custom_kind_is_checked_somewhere():
    kinds = {d["kind"] for v in CI_VALUES for d in render("helm4", v) if is_custom(d)}
    assert kinds == {"InferenceService", "PodMonitor", "PrometheusRule", "HTTPRoute", "ScaledObject", "InferencePool"}


# Misspellings the API server would silently prune; the strict CRD check must catch each one.
MISSPELLED = [
    ("InferenceService", "everything", lambda d: d["spec"]["predictor"].update(minReplica=2)),
    ("InferenceService", "defaults", lambda d: d["spec"]["transformer"]["containers"][0].update(readinesProbe={})),
    ("InferenceService", "defaults", lambda d: d["spec"]["predictor"]["containers"][0]["securityContext"]
     .update(readOnlyRootFileSystem=True)),
    ("PodMonitor", "monitoring", lambda d: d["spec"]["podMetricsEndpoints"][0].update(relabelling=[])),
    ("PrometheusRule", "monitoring", lambda d: d["spec"]["groups"][0]["rules"][0].update(expression="1")),
    ("HTTPRoute", "gateway", lambda d: d["spec"]["rules"][0].update(timeout={"request": "1s"})),
    ("HTTPRoute", "gateway", lambda d: d["spec"].update(hostname=["x.example.com"])),
    ("ScaledObject", "scale-to-zero", lambda d: d["spec"].update(minReplicas=0)),
    ("ScaledObject", "scale-to-zero", lambda d: d["spec"]["scaleTargetRef"].update(deployment="x")),
    ("InferencePool", "inference-pool", lambda d: d["spec"].update(targetPortNumber=8080)),
    ("InferencePool", "inference-pool", lambda d: d["spec"]["endpointPickerRef"].update(portNumber=9002)),
]


@pytest.mark.parametrize("kind,vid,mutate", MISSPELLED, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(MISSPELLED)])
def test_misspelled_field_in_custom_resource_fails(kind, vid, mutate):
    values = next(v for v in CI_VALUES if values_id(v) == vid)
    doc = find(render("helm4", values), kind)
    assert not crd_errors(doc)
    mutate(doc)
    errors = crd_errors(doc)
    assert errors and any("Additional properties are not allowed" in e for e in errors), errors


def test_wrong_type_in_custom_resource_fails():
    doc = find(render("helm4"), "InferenceService")
    doc["spec"]["predictor"]["maxReplicas"] = "three"
    assert crd_errors(doc)
    doc = find(render("helm4"), "InferenceService")
    doc["spec"]["predictor"]["scaleMetric"] = "latency"   # not in the CRD's enum
    assert crd_errors(doc)


def test_int_or_string_fields_accept_both():
    doc = find(render("helm4"), "InferenceService")
    limits = doc["spec"]["predictor"]["containers"][0]["resources"]["limits"]
    limits["cpu"] = 4                                      # x-kubernetes-int-or-string
    assert not crd_errors(doc)
    limits["cpu"] = [4]
    assert crd_errors(doc)


def test_vendored_crds_match_the_shared_copies():
    """Where the workspace's shared CRDs exist, the vendored copies must be identical (no drift)."""
    import pathlib

    from tests.chart.chart_tools import CRD_FILES, CRDS

    for name in CRD_FILES.values():
        assert (CRDS / name).is_file(), name
    shared = pathlib.Path(__file__).resolve().parents[3] / "shared" / "crds"
    if shared.is_dir():
        for name in CRD_FILES.values():
            assert (CRDS / name).read_bytes() == (shared / name).read_bytes(), name
