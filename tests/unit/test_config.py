"""Flags: kserve's parser extended, every flag of ours also an env var, bad values refused."""

from __future__ import annotations

import pytest

from predictor import config as pconfig
from predictor import device
from transformer import config as tconfig


def test_defaults_fit_one_gpu_and_kserve_flags_are_kept():
    s = pconfig.load(["--model_name", "snap", "--http_port", "9000", "--grpc_port", "9001"])
    assert (s.model_name, s.http_port, s.grpc_port) == ("snap", 9000, 9001)
    assert str(s.model_dir) == "/mnt/models"
    assert (s.max_batch_size, s.max_batch_tokens, s.cpu_threads) == ("auto", "auto", 0)
    assert s.device == "auto" and s.dtype == "auto"
    assert s.instances == device.auto_instances("auto")  # this CPU-only box: one per core, at most 4
    assert pconfig.load(["--instances", "3"]).instances == 3


def test_auto_instances_are_one_on_a_gpu_and_one_per_core_on_a_cpu(monkeypatch):
    assert device.auto_instances("cpu", cpu_threads=2) == 2
    assert device.auto_instances("cpu", cpu_threads=1) == 1
    assert device.auto_instances("cpu", cpu_threads=16) == device.MAX_AUTO_CPU_INSTANCES
    assert device.auto_instances("cpu", environ={"OMP_NUM_THREADS": "3"}) == 3
    assert device.auto_instances("cuda", cpu_threads=8) == 1  # (decided without a GPU in sight)
    monkeypatch.setattr(device.torch.cuda, "is_available", lambda: True)
    assert device.auto_instances("auto", cpu_threads=8) == 1


def test_env_vars_set_defaults_and_flags_win(monkeypatch):
    monkeypatch.setenv("MAX_BATCH_SIZE", "64")
    monkeypatch.setenv("MAX_DELAY_MS", "0.5")
    monkeypatch.setenv("MODEL_DIR", "/models/x")
    monkeypatch.setenv("WARMUP", "false")
    s = pconfig.load(["--max_batch_size", "32"])
    assert s.max_batch_size == 32
    assert s.max_delay_ms == 0.5
    assert str(s.model_dir) == "/models/x"
    assert s.warmup is False


@pytest.mark.parametrize("argv", [["--max_batch_size", "0"], ["--instances", "0"], ["--max_delay_ms", "-1"],
                                  ["--workers", "2"]])
def test_impossible_predictor_settings_are_refused(argv):
    with pytest.raises(ValueError):
        pconfig.load(argv)


def test_bad_choice_is_an_argparse_error():
    with pytest.raises(SystemExit):
        pconfig.load(["--dtype", "float8"])


def test_transformer_needs_a_predictor_and_speaks_v2():
    with pytest.raises(ValueError, match="predictor_host"):
        tconfig.load([])
    s = tconfig.load(["--predictor_host", "p:80"])
    assert s.predictor_protocol == "v2"
    s = tconfig.load(["--predictor_host", "p:80", "--predictor_protocol", "grpc-v2"])
    assert s.predictor_protocol == "grpc-v2"


def test_logged_settings_hide_secrets_only():
    import dataclasses

    from snapserve.settings import describe

    @dataclasses.dataclass
    class S:
        max_batch_tokens: int = 1
        api_key: str = "hunter2"
        hf_token: str = "abc"

    assert describe(S()) == {"max_batch_tokens": "1", "api_key": "***", "hf_token": "***"}


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_bad_coalesce_delay_is_reported_under_its_own_name(value):
    with pytest.raises(ValueError, match=r"^--coalesce_delay_ms must be >= 0"):
        tconfig.load(["--predictor_host", "p:80", "--coalesce_delay_ms", value])


def test_max_body_bytes_is_one_flag_with_a_default_per_server():
    assert pconfig.load([]).max_body_bytes == 32 * 1024 * 1024
    assert tconfig.load(["--predictor_host", "p:80"]).guard.max_body_bytes == 8 * 1024 * 1024
