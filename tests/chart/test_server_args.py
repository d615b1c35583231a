"""The args the chart renders, plus what KServe appends, parse with the servers' own parsers."""

from __future__ import annotations

import pytest

from tests.chart.chart_tools import CI_VALUES, NAMESPACE, find, render, values_id


def kserve_transformer_args(args: list[str], isvc_name: str) -> list[str]:
    """What KServe's CustomTransformer.GetContainer appends when the flag is missing
    (pkg/apis/serving/v1beta1/transformer_custom.go): --model_name, --predictor_host, --http_port."""
    out = list(args)
    if "--model_name" not in out:
        out += ["--model_name", isvc_name]
    if "--predictor_host" not in out:
        out += ["--predictor_host", f"{isvc_name}-predictor.{NAMESPACE}"]
    if "--http_port" not in out:
        out += ["--http_port", "8080"]
    return out


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_predictor_accepts_rendered_args(values):
    from predictor import config

    isvc = find(render("helm4", values), "InferenceService")
    settings = config.load(isvc["spec"]["predictor"]["containers"][0]["args"])
    assert settings.model_name == isvc["metadata"]["name"]
    assert str(settings.model_dir) == "/mnt/models" and settings.http_port == 8080 and settings.grpc_port == 8081


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_transformer_accepts_rendered_args_plus_kserve_injection(values):
    from transformer import config

    isvc = find(render("helm4", values), "InferenceService")
    name = isvc["metadata"]["name"]
    args = kserve_transformer_args(isvc["spec"]["transformer"]["containers"][0]["args"], name)
    settings = config.load(args)
    assert settings.model_name == name
    assert settings.predictor_host == f"{name}-predictor.{NAMESPACE}"
    assert settings.predictor_protocol == "v2" and settings.http_port == 8080 and settings.grpc_port == 8081


def test_drain_fits_in_the_grace_period():
    from predictor import config as pconfig
    from transformer import config as tconfig

    isvc = find(render("helm4"), "InferenceService")
    for comp, mod in (("predictor", pconfig), ("transformer", tconfig)):
        spec = isvc["spec"][comp]
        args = spec["containers"][0]["args"]
        if comp == "transformer":
            args = kserve_transformer_args(args, isvc["metadata"]["name"])
        drain = mod.load(args).grace_period
        pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop + drain < spec["terminationGracePeriodSeconds"], comp


CPU_THREADS = {"name": "CPU_THREADS",
               "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}}


def predictor_container(values_file=None, sets: tuple[str, ...] = ()) -> dict:
    return find(render("helm4", values_file, sets), "InferenceService")["spec"]["predictor"]["containers"][0]


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_predictor_threads_follow_the_cpu_limit(values, monkeypatch):
    """torch would run one thread per node core; the downward API hands it the CPU limit (rounded up)."""
    from predictor import config

    container = predictor_container(values)
    assert container["resources"]["limits"]["cpu"]
    assert CPU_THREADS in container["env"]
    # Kubernetes resolves the resourceFieldRef to an integer string; the predictor reads it as --cpu_threads.
    monkeypatch.setenv("CPU_THREADS", "4")
    assert config.load(container["args"]).cpu_threads == 4


def test_no_cpu_threads_without_a_cpu_limit_or_with_the_users_own(tmp_path):
    no_limit = predictor_container(sets=("predictor.resources.limits.cpu=null",))
    assert "CPU_THREADS" not in {e["name"] for e in no_limit["env"]}
    own = tmp_path / "own-threads.yaml"
    own.write_text('predictor: {env: [{name: CPU_THREADS, value: "2"}]}\n')
    env = predictor_container(own)["env"]
    assert [e for e in env if e["name"] == "CPU_THREADS"] == [{"name": "CPU_THREADS", "value": "2"}]
