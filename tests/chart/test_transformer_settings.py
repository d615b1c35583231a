"""The transformer's hardening and coalescing values: rendered as env vars its own parser accepts,
the API-keys Secret mounted where API_KEYS_FILE points, and the render-time checks that guard them."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.chart_tools import CHART, CI_VALUES, component_container, find, render, values_id
from tests.chart.test_server_args import kserve_transformer_args
from tests.chart.test_values import VALUES, merged

AUTH = CHART / "ci" / "auth-values.yaml"

def env_names() -> tuple[str, ...]:
    """Every env var of the transformer's declared flags (each also read from the test process's env)."""
    from snapserve import settings as S
    from transformer import config

    return tuple(f.env for f in S.flags(config.Settings))


def effective_values(values_file) -> dict:
    return merged(yaml.safe_load(VALUES.read_text()), yaml.safe_load(values_file.read_text()) or {})


def container(spec: dict) -> dict:
    return spec["containers"][0]


def plain_env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def mounted_file(pod_spec: dict, c: dict, path: str) -> tuple[dict, str]:
    """The Secret volume and key behind a file path inside container ``c``."""
    for mount in c.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
            item = next(i for i in volume["secret"]["items"] if i["path"] == path.removeprefix(prefix))
            assert mount["readOnly"] is True
            return volume, item["key"]
    raise AssertionError(f"{path} is on no volume mount of {c['name']}")


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_transformer_parser_takes_the_rendered_env(values, monkeypatch, tmp_path):
    from transformer import config

    v = effective_values(values)["transformer"]
    isvc = find(render("helm4", values), "InferenceService")
    c = component_container(isvc, "transformer")
    env = plain_env(c)
    assert ("API_KEYS_FILE" in env) == v["auth"]["enabled"]
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if v["auth"]["enabled"]:
        # The Secret is mounted in the pod; here a real file with two keys stands in for it.
        keys = tmp_path / "keys"
        keys.write_text("# one key per line\nkey-one\nkey-two\n")
        monkeypatch.setenv("API_KEYS_FILE", str(keys))
    s = config.load(kserve_transformer_args(c["args"], isvc["metadata"]["name"]))
    assert s.guard.api_keys_file == (str(tmp_path / "keys") if v["auth"]["enabled"] else "")
    assert s.guard.rate_limit_rps == v["rateLimit"]["rps"] and s.guard.rate_limit_burst == v["rateLimit"]["burst"]
    assert s.guard.max_body_bytes == v["limits"]["maxBodyBytes"]
    assert s.guard.max_concurrent_requests == v["limits"]["maxConcurrentRequests"]
    assert (s.max_texts, s.max_text_chars) == (v["limits"]["maxTexts"], v["limits"]["maxTextChars"])
    assert s.coalesce_max_sequences == v["coalesce"]["maxSequences"]
    assert s.coalesce_delay_ms == v["coalesce"]["delayMs"]
    assert s.predictor_max_in_flight == v["coalesce"]["maxInFlight"]
    assert s.max_queue_sequences == v["queue"]["maxSequences"]
    assert (s.max_queue_requests, s.max_queue_requests_per_key) == (v["queue"]["maxRequests"],
                                                                    v["queue"]["maxRequestsPerKey"])


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_predictor_queue_holds_every_coalesced_call(values, monkeypatch):
    """What the render-time check promises, read back through both servers' own parsers."""
    from predictor import config as pconfig
    from transformer import config as tconfig

    isvc = find(render("helm4", values), "InferenceService")
    pred = pconfig.load(container(isvc["spec"]["predictor"])["args"])
    c = component_container(isvc, "transformer")
    for name, value in plain_env(c).items():
        if name != "API_KEYS_FILE":
            monkeypatch.setenv(name, value)
    t = tconfig.load(kserve_transformer_args(c["args"], isvc["metadata"]["name"]))
    assert pred.max_queue_sequences >= t.coalesce_max_sequences * t.predictor_max_in_flight


@pytest.mark.parametrize("values", [AUTH, CHART / "ci" / "everything-values.yaml"], ids=values_id)
def test_auth_mounts_the_secret_where_api_keys_file_points(values):
    auth = effective_values(values)["transformer"]["auth"]
    docs = render("helm4", values)
    spec = find(docs, "InferenceService")["spec"]["transformer"]
    c = container(spec)
    path = plain_env(c)["API_KEYS_FILE"]
    volume, key = mounted_file(spec, c, path)
    assert volume["secret"]["secretName"] == auth["existingSecret"] and key == auth["secretKey"]
    # The helm test pod reads the same file to send the first key.
    pod = find(docs, "Pod", "-test-embedding")["spec"]
    test_c = container(pod)
    assert plain_env(test_c)["API_KEYS_FILE"] == path
    assert mounted_file(pod, test_c, path) == (volume, key)


def test_no_keys_no_secret_volume():
    docs = render("helm4")
    spec = find(docs, "InferenceService")["spec"]["transformer"]
    assert [v["name"] for v in spec["volumes"]] == ["tmp"]
    assert "API_KEYS_FILE" not in plain_env(container(spec))
    pod = find(docs, "Pod", "-test-embedding")["spec"]
    assert "volumes" not in pod and "API_KEYS_FILE" not in plain_env(container(pod))


def test_values_file_numbers_render_as_plain_numbers():
    """Helm reads values-file numbers as floats; big ones must not come out as 8.388608e+06."""
    env = plain_env(container(find(render("helm4"), "InferenceService")["spec"]["transformer"]))
    assert env["MAX_BODY_BYTES"] == "8388608" and env["MAX_TEXT_CHARS"] == "100000"
    assert env["COALESCE_DELAY_MS"] == "0.5"
