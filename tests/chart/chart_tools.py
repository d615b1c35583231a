"""Rendering the chart with real helm binaries and strict CRD schemas for offline validation."""

from __future__ import annotations

import copy
import functools
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "snapserve"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
# Upstream CRDs, vendored unmodified (provenance in crds/README.md) so CI needs nothing outside the repo.
CRDS = Path(__file__).resolve().parent / "crds"
HELMS = {"helm4": ROOT / ".venv" / "bin" / "helm4", "helm3": ROOT / ".venv" / "bin" / "helm3"}
RELEASE, NAMESPACE = "snapserve", "snapserve"
# The oldest Kubernetes the chart's kubeVersion admits, and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")

# Custom resources and the CRD file that defines each.
CRD_FILES = {
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("monitoring.coreos.com", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("gateway.networking.k8s.io", "HTTPRoute"): "gateway.networking.k8s.io_httproutes.yaml",
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("inference.networking.k8s.io", "InferencePool"): "inference.networking.k8s.io_inferencepools.yaml",
}


def values_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


def helm(name: str) -> Path:
    """The helm binary; missing is a failure, not a skip (ci/setup.d/40-helm.sh installs both)."""
    path = HELMS[name]
    assert path.is_file(), f"{path} missing: run `bash ci/setup.d/40-helm.sh` (make test does)"
    return path


def run_helm(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(helm(name)), *args], check=False, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"{name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def template_args(values_file: Path | None = None, sets: tuple[str, ...] = ()) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values_file is not None:
        args += ["-f", str(values_file)]
    for s in sets:
        args += ["--set", s]
    return args


@functools.cache
def render_text(helm_name: str, values_file: Path | None = None, sets: tuple[str, ...] = ()) -> str:
    return run_helm(helm_name, *template_args(values_file, sets)).stdout


def render(helm_name: str, values_file: Path | None = None, sets: tuple[str, ...] = ()) -> list[dict]:
    """Rendered documents (deep copies, safe to mutate)."""
    docs = [d for d in yaml.safe_load_all(render_text(helm_name, values_file, sets)) if d]
    return copy.deepcopy(docs)


def render_error(helm_name: str, values_file: Path | None = None, sets: tuple[str, ...] = ()) -> str:
    """stderr of a render that must fail."""
    proc = run_helm(helm_name, *template_args(values_file, sets), check=False)
    assert proc.returncode != 0, f"render with {sets} succeeded but must fail"
    return proc.stderr


def group_of(doc: dict) -> str:
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def is_custom(doc: dict) -> bool:
    return (group_of(doc), doc["kind"]) in CRD_FILES


def find(docs: list[dict], kind: str, name_suffix: str = "") -> dict:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, f"expected one {kind} *{name_suffix}, found {len(hits)}"
    return hits[0]


# ---- strict JSON Schema from a CRD's openAPIV3Schema -------------------------------------------

_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf")
_SCHEMA_ONE = ("items", "not", "additionalProperties")


def strict_schema(node):
    """Translate Kubernetes' structural-schema extensions into plain, strict JSON Schema.

    x-kubernetes-int-or-string -> integer or string; x-kubernetes-preserve-unknown-fields -> any extra
    keys allowed; nullable -> null allowed; every other object with `properties` gets
    additionalProperties: false, so a misspelled field fails instead of being pruned by the API server.
    """
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:
            out[key] = [strict_schema(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            out[key] = strict_schema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node and not preserve and "additionalProperties" not in node:
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


# ObjectMeta as the chart may write it; CRDs leave metadata as a bare object.
_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


@functools.cache
def crd_validator(group: str, kind: str, version: str):
    import jsonschema

    crd = yaml.safe_load((CRDS / CRD_FILES[(group, kind)]).read_text())
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert version in versions, f"{kind} {version} not in CRD versions {sorted(versions)}"
    assert versions[version].get("served", True), f"{kind} {version} is not served"
    schema = strict_schema(versions[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = _META
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["additionalProperties"] = False
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def crd_errors(doc: dict) -> list[str]:
    validator = crd_validator(group_of(doc), doc["kind"], doc["apiVersion"].split("/")[1])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


# ---- the two servers' containers, separate components or collocated in one pod ------------------

def collocated(isvc: dict) -> bool:
    """True when the transformer is a second container of the predictor pod (KServe's collocation)."""
    return "transformer" not in isvc["spec"]


def component_container(isvc: dict, component: str) -> dict:
    """The predictor's or the transformer's container, wherever KServe expects it."""
    if component == "predictor" or not collocated(isvc):
        return isvc["spec"][component]["containers"][0]
    (c,) = [c for c in isvc["spec"]["predictor"]["containers"] if c["name"] == "transformer-container"]
    return c


def component_pod(isvc: dict, component: str) -> dict:
    """The pod-level spec a component's container runs in (the predictor's when collocated)."""
    return isvc["spec"]["predictor" if collocated(isvc) else component]


def predictor_port(isvc: dict) -> int:
    return 8085 if collocated(isvc) else 8080
