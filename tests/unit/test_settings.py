"""snapserve.settings: one field declaration gives flag, env var, default, help and the tasks it applies to."""

from __future__ import annotations

import dataclasses
import json

import pytest

from snapserve import settings as S
from snapserve.settings import ENCODER, GENERATE, group, kserve, same_as, setting


@dataclasses.dataclass(frozen=True)
class Inner:
    limit: int = setting(0, "an inner limit", flag="inner_limit", tasks=GENERATE)
    body: int = same_as("max_bytes", 1)


@dataclasses.dataclass(frozen=True)
class Demo:
    model_name: str = kserve("model_name", "model")
    port: int = kserve("http_port", 8080, lambda value, args: int(value) + 1)
    max_texts: int = setting(2048, "most texts in one request", tasks=ENCODER)
    ratio: float = setting(0.5, "a ratio")
    on: bool = setting(True, "a switch")
    mode: str = setting("auto", "a choice", choices=["auto", "fast"])
    dims: tuple[int, ...] = setting((), "widths", type=S.int_list)
    max_bytes: int = setting(100, "largest body")
    inner: Inner = group(Inner)  # noqa: RUF009

    def __post_init__(self):
        if self.max_texts < 1:
            raise ValueError("--max_texts must be at least 1")


def load(argv, environ=None):
    return S.load(Demo, S.parser(Demo, "transformer", "demo"), argv, environ or {})


def test_defaults_env_and_flags_in_that_order():
    s, explicit = load([])
    assert (s.max_texts, s.ratio, s.on, s.mode, s.dims, s.inner.limit) == (2048, 0.5, True, "auto", (), 0)
    assert explicit == set()
    env = {"MAX_TEXTS": "7", "RATIO": "0.25", "ON": "false", "MODE": "fast", "DIMS": "64, 128", "INNER_LIMIT": "3"}
    s, explicit = load([], env)
    assert (s.max_texts, s.ratio, s.on, s.mode, s.dims, s.inner.limit) == (7, 0.25, False, "fast", (64, 128), 3)
    assert explicit == {"max_texts", "ratio", "on", "mode", "dims", "inner_limit"}
    s, explicit = load(["--max_texts", "9", "--on", "yes", "--inner_limit", "5"], env)
    assert (s.max_texts, s.on, s.inner.limit, s.ratio) == (9, True, 5, 0.25)
    assert "max_texts" in explicit


def test_an_empty_env_var_is_unset():
    s, explicit = load([], {"MAX_TEXTS": ""})
    assert s.max_texts == 2048 and explicit == set()


def test_kserve_flags_are_read_not_redeclared_and_nested_fields_share_a_flag():
    s, _ = load(["--model_name", "snap", "--http_port", "9000", "--max_bytes", "42"])
    assert (s.model_name, s.port) == ("snap", 9001)
    assert s.inner.body == 42 and s.max_bytes == 42


def test_the_parser_is_generated_from_the_fields():
    helptext = S.parser(Demo, "transformer", "demo").format_help()
    for flag in ("--max_texts", "--ratio", "--on", "--mode", "--dims", "--inner_limit", "--max_bytes"):
        assert flag in helptext
    assert "env MAX_TEXTS; default 2048; encoders only" in " ".join(helptext.split())
    assert "--inner.limit" not in helptext and "--limit " not in helptext
    assert [f.name for f in S.flags(Demo)] == ["max_texts", "ratio", "on", "mode", "dims", "max_bytes", "inner_limit"]


def test_redeclaring_a_kserve_flag_or_a_flag_twice_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Clash:
        http_port: int = setting(8080, "kserve has it")

    with pytest.raises(TypeError, match="kserve's flag"):
        S.parser(Clash, "transformer", "clash")

    @dataclasses.dataclass(frozen=True)
    class Twice:
        a: int = setting(1, "one", flag="same")
        b: int = setting(2, "two", flag="same")

    with pytest.raises(TypeError, match="more than once"):
        S.flags(Twice)


@pytest.mark.parametrize(("env", "message"), [({"MAX_TEXTS": "many"}, "env MAX_TEXTS='many'"),
                                              ({"ON": "perhaps"}, "env ON='perhaps'"),
                                              ({"MODE": "slow"}, "choose from auto, fast")])
def test_a_bad_env_value_is_a_settings_error_naming_the_variable(env, message):
    with pytest.raises(ValueError, match=message):
        load([], env)


def test_a_bad_flag_value_is_an_argparse_error_and_post_init_still_validates():
    with pytest.raises(SystemExit):
        load(["--mode", "slow"])
    with pytest.raises(ValueError, match="--max_texts must be at least 1"):
        load(["--max_texts", "0"])


def test_only_explicit_flags_of_another_task_are_refused():
    _, explicit = load(["--inner_limit", "2"], {"MAX_TEXTS": "5"})
    S.refuse_inapplicable(Demo, explicit, None, "/m")  # unknown task: nothing to check
    with pytest.raises(ValueError, match=r"--max_texts \(env MAX_TEXTS: encoders only\)"):
        S.refuse_inapplicable(Demo, explicit, "generate", "/m")
    with pytest.raises(ValueError, match=r"--inner_limit \(env INNER_LIMIT: generate only\)"):
        S.refuse_inapplicable(Demo, explicit, "embedding", "/m")
    _, defaulted = load(["--ratio", "1"])
    S.refuse_inapplicable(Demo, defaulted, "generate", "/m")
    S.refuse_inapplicable(Demo, defaulted, "embedding", "/m")


# -- the servers' own settings ---------------------------------------------------------------------

def causal_lm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return str(tmp_path)


def encoder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    return str(tmp_path)


@pytest.mark.parametrize("argv", [["--coalesce_max_sequences", "64"], ["--max_texts", "10"],
                                  ["--max_queue_sequences", "100"], ["--predictor_max_in_flight", "2"],
                                  ["--matryoshka_dims", "64"]])
def test_transformer_refuses_encoder_flags_for_a_causal_lm(argv, tmp_path):
    from transformer import config

    with pytest.raises(ValueError, match=f"is for the generate task.*{argv[0]}"):
        config.load(["--predictor_host", "p:80", "--model_dir", causal_lm(tmp_path), *argv])


def test_transformer_refuses_an_env_var_of_the_other_task(tmp_path, monkeypatch):
    from transformer import config

    monkeypatch.setenv("COALESCE_MAX_SEQUENCES", "64")
    with pytest.raises(ValueError, match="COALESCE_MAX_SEQUENCES"):
        config.load(["--predictor_host", "p:80", "--model_dir", causal_lm(tmp_path)])
    monkeypatch.delenv("COALESCE_MAX_SEQUENCES")
    monkeypatch.setenv("MAX_QUEUE_REQUESTS", "8")
    with pytest.raises(ValueError, match=r"--max_queue_requests .*generate only"):
        config.load(["--predictor_host", "p:80", "--model_dir", encoder(tmp_path)])


def test_transformer_takes_shared_and_own_task_flags(tmp_path):
    from transformer import config

    shared = ["--request_timeout_ms", "1000", "--max_text_chars", "10", "--max_length", "8", "--rate_limit_rps", "3"]
    s = config.load(["--predictor_host", "p:80", "--model_dir", causal_lm(tmp_path), *shared,
                     "--max_queue_requests", "9", "--max_queue_requests_per_key", "3"])
    assert (s.max_queue_requests, s.max_queue_requests_per_key, s.guard.rate_limit_rps) == (9, 3, 3.0)
    assert config.load(["--predictor_host", "p:80", *shared, "--coalesce_max_sequences", "64"],
                       task="embedding").coalesce_max_sequences == 64


@pytest.mark.parametrize(("argv", "task"), [(["--max_batch_size", "8"], "generate"), (["--engine", "onnx"], "generate"),
                                            (["--instances", "2"], "generate"), (["--kv_blocks", "16"], "embedding"),
                                            (["--generate_seed", "1"], "rerank")])
def test_predictor_refuses_flags_of_the_other_task(argv, task):
    from predictor import config

    with pytest.raises(ValueError, match=f"is for the {task} task.*{argv[0]}"):
        config.load(argv, task=task)


def test_predictor_reads_the_task_from_the_snapshot_and_exits_2(tmp_path, capsys):
    from predictor import __main__ as main
    from predictor import config

    model_dir = causal_lm(tmp_path)
    assert config.load(["--model_dir", model_dir, "--kv_blocks", "16"]).generate.kv_blocks == 16
    assert main.main(["--model_dir", model_dir, "--max_batch_size", "8"]) == 2
    assert "--max_batch_size" in capsys.readouterr().err
    # --task wins over the folder, as it does when serving
    with pytest.raises(ValueError, match="is for the embedding task"):
        config.load(["--model_dir", model_dir, "--task", "embedding", "--kv_blocks", "16"])


@pytest.mark.parametrize("module", ["predictor.config", "transformer.config"])
def test_every_settings_field_is_declared(module):
    import importlib

    cls = importlib.import_module(module).Settings
    for klass in (cls, *(f.metadata[S.KEY] for f in dataclasses.fields(cls) if isinstance(f.metadata.get(S.KEY), type))):
        missing = [f.name for f in dataclasses.fields(klass) if S.KEY not in f.metadata]
        assert not missing, f"{klass.__name__}: declare {missing} with setting()/kserve()/group()"


def test_flags_keep_their_names_and_defaults():
    """Clients and the chart rely on these; a rename or a new default is a breaking change."""
    from predictor import config as pconfig
    from transformer import config as tconfig

    p = {f.name: f.default for f in S.flags(pconfig.Settings)}
    t = {f.name: f.default for f in S.flags(tconfig.Settings)}
    assert {k: p[k] for k in ("max_body_bytes", "request_timeout_ms", "log_access", "max_queue_sequences",
                              "generate_max_batch_tokens", "generate_seed", "max_queue_requests", "tuning_cache")} == {
        "max_body_bytes": 32 * 1024 * 1024, "request_timeout_ms": 30_000.0, "log_access": False,
        "max_queue_sequences": 4096, "generate_max_batch_tokens": 0, "generate_seed": -1, "max_queue_requests": 256,
        "tuning_cache": "/tmp/snapserve-tuning"}
    assert {k: t[k] for k in ("max_body_bytes", "request_timeout_ms", "log_access", "max_queue_sequences",
                              "max_queue_requests", "coalesce_delay_ms", "api_keys_file")} == {
        "max_body_bytes": 8 * 1024 * 1024, "request_timeout_ms": 25_000.0, "log_access": True,
        "max_queue_sequences": 2048, "max_queue_requests": 256, "coalesce_delay_ms": 0.5, "api_keys_file": ""}


def test_readme_flag_tables_match_the_declarations():
    from tools import render_flags

    text = render_flags.README.read_text(encoding="utf-8")
    assert render_flags.render(text) == text, "stale flag tables in README.md: run python -m tools.render_flags"
    assert render_flags.main(["--check"]) == 0


def test_render_flags_replaces_only_the_text_between_its_markers(tmp_path):
    from tools import render_flags

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nkept\n{render_flags.BEGIN}\nold table\n{render_flags.END}\nafter\n")
    assert render_flags.main(["--check", "--readme", str(readme)]) == 1
    assert render_flags.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\nkept\n<!-- flags:begin -->\n**Predictor**") and text.endswith("<!-- flags:end -->\nafter\n")
    assert "| `--coalesce_max_sequences` | `COALESCE_MAX_SEQUENCES` | `256` | encoders |" in text
    assert "| `--max_queue_requests` | `MAX_QUEUE_REQUESTS` | `256` | generate |" in text
    assert render_flags.main(["--check", "--readme", str(readme)]) == 0
