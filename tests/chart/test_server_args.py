"""The args the chart renders, plus what KServe appends, parse with the servers' own parsers."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.chart_tools import (
    CI_VALUES,
    NAMESPACE,
    collocated,
    component_container,
    find,
    predictor_port,
    render,
    values_id,
)
from tests.chart.test_values import VALUES, merged


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
    port = predictor_port(isvc)  # collocated: the transformer container keeps 8080
    assert str(settings.model_dir) == "/mnt/models" and settings.http_port == port and settings.grpc_port == port + 1


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_transformer_accepts_rendered_args_plus_kserve_injection(values):
    from transformer import config

    isvc = find(render("helm4", values), "InferenceService")
    name = isvc["metadata"]["name"]
    args = kserve_transformer_args(component_container(isvc, "transformer")["args"], name)
    settings = config.load(args)
    assert settings.model_name == name
    host = "localhost:8085" if collocated(isvc) else f"{name}-predictor.{NAMESPACE}"
    assert settings.predictor_host == host
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


# -- every declared flag the chart is meant to set, set for its task ----------------------------------
# A flag declared with chart="<values key>" (snapserve.settings.setting) must be rendered, as an arg or
# its env var, for every install whose task it applies to, with that key's value. Every other declared
# flag must be listed here with the reason the chart leaves it at the server's default, so a new flag
# fails this test until it is mapped or excluded on purpose.
NOT_IN_CHART = {
    "predictor": {
        "model_dir": "fixed by the template: /mnt/models, where KServe's storage initializer puts the model",
        # behaviour and tuning knobs with a measured default; predictor.extraArgs sets them
        "max_batch_latency_ms": "extraArgs", "shared_batch_latency_ms": "extraArgs", "engine": "extraArgs",
        "compile": "extraArgs", "quantize": "extraArgs", "cpu_bf16": "extraArgs", "tuning_cache": "extraArgs",
        "warmup": "extraArgs", "verify_snapshot": "extraArgs", "drop_abandoned": "extraArgs",
        # the predictor's callers are transformers, which hold the client-facing limits and deadlines
        "max_body_bytes": "the transformer's limits.maxBodyBytes is the client-facing one",
        "request_timeout_ms": "the transformer forwards what is left of each request's deadline",
        "client_timeout_s": "its clients are transformers in the cluster",
        # the generate engine's knobs: picked for the device at start
        "kv_blocks": "extraArgs", "kv_page_size": "extraArgs", "generate_max_batch_tokens": "extraArgs",
        "max_queue_requests": "extraArgs (the transformer's queue.maxRequests holds chat requests first)",
        "max_new_tokens": "extraArgs", "generate_seed": "extraArgs", "generate_attention": "extraArgs",
        "generate_prefix_sharing": "extraArgs", "generate_weights": "extraArgs (int8 is opt-in, behind its gate)",
        "generate_gate_min_agreement": "extraArgs", "generate_gate_max_perplexity_ratio": "extraArgs",
        "generate_linear": "extraArgs", "generate_one_thread_tokens": "extraArgs (the thread budget is the CPU limit)",
    },
    "transformer": {
        "model_dir": "fixed by the template: /mnt/models (the tokenizer files of the same snapshot)",
        "api_keys_file": "set only with transformer.auth.enabled (test_auth_mounts_the_secret_where_api_keys_file_points)",
        "drop_abandoned": "extraArgs (false only for comparisons)",
        "log_predictor_calls": "extraArgs (a debugging aid)",
        "max_dimensions": "extraArgs; the snapshot's own Matryoshka widths are the default",
        "matryoshka_dims": "extraArgs; the snapshot's own Matryoshka widths are the default",
    },
}


def settings_module(component: str):
    import importlib

    return importlib.import_module(f"{component}.config")


def declared(component: str):
    from snapserve import settings as S

    return S.flags(settings_module(component).Settings)


def install_task(values: dict) -> str:
    task = values["predictor"]["task"]
    return "embedding" if task == "auto" else task  # auto: the chart's default model, an embedding one


def value_at(values: dict, key: str):
    for part in key.split("."):
        values = values[part]
    return values


@pytest.mark.parametrize("component", ["predictor", "transformer"])
def test_every_declared_flag_is_mapped_in_the_chart_or_excluded_with_a_reason(component):
    flags = {f.name: f for f in declared(component)}
    mapped = {name for name, f in flags.items() if f.chart}
    excluded = set(NOT_IN_CHART[component])
    assert not excluded - set(flags), f"NOT_IN_CHART[{component!r}] names flags that are not declared"
    assert not mapped & excluded, f"declared with chart= and excluded: {sorted(mapped & excluded)}"
    unmapped = set(flags) - mapped - excluded
    assert not unmapped, (f"{component} flags {sorted(unmapped)}: map each in charts/snapserve (values.yaml, schema "
                          "overlay, templates/inferenceservice.yaml) and declare it with chart=, or list it in "
                          "NOT_IN_CHART with the reason")
    for f in flags.values():
        if f.chart:
            value_at(yaml.safe_load(VALUES.read_text()), f.chart)  # the key exists in values.yaml


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: "chart-defaults" if v is None else values_id(v))
@pytest.mark.parametrize("component", ["predictor", "transformer"])
def test_the_chart_sets_each_flag_of_its_task_and_no_other(component, values, monkeypatch):
    from snapserve import settings as S

    effective = merged(yaml.safe_load(VALUES.read_text()), yaml.safe_load(values.read_text()) or {} if values else {})
    task = install_task(effective)
    isvc = find(render("helm4", values), "InferenceService")
    c = component_container(isvc, component)
    args = c["args"] if component == "predictor" else kserve_transformer_args(c["args"], isvc["metadata"]["name"])
    env = {e["name"]: e for e in c.get("env", [])}
    flags = declared(component)
    rendered = {f.name for f in flags if f"--{f.name}" in args or f.env in env}
    for f in flags:
        if f.chart and task in f.tasks:
            assert f.name in rendered, (f"a {task} install renders neither --{f.name} nor {f.env}: map {f.chart} "
                                        f"in charts/snapserve/templates/inferenceservice.yaml")
        if f.name in rendered:
            assert task in f.tasks, (f"a {task} install passes --{f.name}/{f.env}, which the {component} refuses "
                                     f"for that task ({S.tasks_text(f.tasks)} only): render it for those only")
    # What the server makes of it: no refusal, and each mapped flag carries its values key's value.
    plain = {name: e["value"] for name, e in env.items() if "value" in e}
    for f in flags:
        monkeypatch.delenv(f.env, raising=False)
    cls = settings_module(component).Settings
    parsed = settings_module(component).parser().parse_args(args)
    explicit = S.resolve(parsed, cls, {k: v for k, v in plain.items() if k != "API_KEYS_FILE"})
    S.refuse_inapplicable(cls, explicit, task, "/mnt/models")
    overridden = set(effective[component]["extraArgs"])  # extraArgs win over the values they repeat
    for f in flags:
        if f.chart and f.name in rendered and "valueFrom" not in env.get(f.env, {}) and f"--{f.name}" not in overridden:
            expected = f.convert(str(value_at(effective, f.chart)).lower() if isinstance(
                value_at(effective, f.chart), bool) else str(value_at(effective, f.chart)))
            assert getattr(parsed, f.name) == expected, f"--{f.name} is not {f.chart}"
