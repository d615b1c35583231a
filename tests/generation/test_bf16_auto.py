"""``--dtype auto`` for generation on a CPU (predictor/generate/precision.py): fp32 without native bf16, fp32 when
bf16 is not faster, and bf16 only within the quality gate, measured on the real SmolLM2 against its fp32 weights.

In-process, no servers. Whether this CPU has native bf16, and which is faster on it, are facts of the machine:
they are replaced here so that every branch runs on any CPU (an AVX2-only one computes bf16 correctly, slowly).
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from predictor.generate import precision
from predictor.generate.settings import GenerateSettings


@pytest.fixture(scope="module")
def fp32(gen_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(gen_dir, dtype=torch.float32, local_files_only=True).eval()


def dtype_of(model) -> torch.dtype:
    return next(model.parameters()).dtype


def test_a_cpu_without_native_bf16_keeps_fp32(fp32, gen_dir, monkeypatch, caplog):
    monkeypatch.setattr(precision.devices, "cpu_has_bf16", lambda: (False, "no avx512_bf16/amx_bf16 (test)"))
    with caplog.at_level(logging.INFO, "snapserve.predictor"):
        assert precision.choose_cpu(fp32, GenerateSettings(), gen_dir) is fp32
    assert "generate: fp32 (no avx512_bf16" in caplog.text


def test_cpu_bf16_false_keeps_fp32(fp32, gen_dir, monkeypatch):
    monkeypatch.setattr(precision.devices, "cpu_has_bf16", lambda: (True, "test"))
    assert precision.choose_cpu(fp32, GenerateSettings(), gen_dir, cpu_bf16=False) is fp32


def test_bf16_that_is_not_faster_is_not_taken(fp32, gen_dir, monkeypatch, caplog):
    monkeypatch.setattr(precision.devices, "cpu_has_bf16", lambda: (True, "test"))
    monkeypatch.setattr(precision, "faster", lambda ref, cand: (False, "1 token 5.0 -> 9.0 ms"))
    with caplog.at_level(logging.INFO, "snapserve.predictor"):
        assert precision.choose_cpu(fp32, GenerateSettings(), gen_dir) is fp32
    assert "bf16 is not faster here (1 token 5.0 -> 9.0 ms" in caplog.text


@pytest.mark.parametrize("bf16_ms, taken", [
    ((9.0, 40.0), True),  # faster at both
    ((10.5, 40.0), True),  # a little slower on the 1-token step (within SLOWER_AT_ONE_TOKEN), much faster at 32
    ((12.0, 40.0), False),  # too much slower on the 1-token step
    ((9.0, 100.0), False),  # not faster on the 32-token pass
])
def test_the_speed_rule(monkeypatch, bf16_ms, taken):
    fp32_ms = (10.0, 100.0)
    ref, cand = object(), object()
    monkeypatch.setattr(precision, "forward_ms",
                        lambda model, tokens: (fp32_ms if model is ref else bf16_ms)[0 if tokens == 1 else 1])
    ok, figures = precision.faster(ref, cand)
    assert ok is taken, figures


def test_bf16_is_taken_within_the_gate_and_refused_outside_it(fp32, gen_dir, monkeypatch, caplog):
    monkeypatch.setattr(precision.devices, "cpu_has_bf16", lambda: (True, "test"))
    monkeypatch.setattr(precision, "faster", lambda ref, cand: (True, "pretend"))
    settings = GenerateSettings()
    with caplog.at_level(logging.INFO, "snapserve.predictor"):
        chosen = precision.choose_cpu(fp32, settings, gen_dir)
    print(caplog.text.strip().splitlines()[-1])  # the gate's figures
    # the default gate's thresholds on this model: bf16 stays within them (measured, and printed above)
    assert dtype_of(chosen) == torch.bfloat16 and dtype_of(fp32) == torch.float32
    strict = dataclasses.replace(settings, gate_min_agreement=1.01)  # more than every token: refused
    caplog.clear()
    with caplog.at_level(logging.INFO, "snapserve.predictor"):
        assert precision.choose_cpu(fp32, strict, gen_dir) is fp32
    assert "bf16 refused by the quality gate" in caplog.text and "--generate_gate_min_agreement 1.01" in caplog.text


def test_forward_ms_times_both_passes(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1)).eval()
    ok, figures = precision.faster(tiny, tiny)
    print(figures)
    assert "1 token" in figures and "32 tokens" in figures and isinstance(ok, bool)


def test_a_snapshot_without_a_usable_tokenizer_keeps_fp32_instead_of_failing(tmp_path, monkeypatch, caplog):
    """A random-weights snapshot (the device check's speed-only model) has no tokenizer for the gate's prompts:
    bf16 that won the race is then refused with the reason in the log, not a crash at start."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1)).eval()
    tiny.save_pretrained(tmp_path)
    monkeypatch.setattr(precision.devices, "cpu_has_bf16", lambda: (True, "test"))
    monkeypatch.setattr(precision, "faster", lambda ref, cand: (True, "bf16 faster (test)"))
    with caplog.at_level(logging.INFO, "snapserve.predictor"):
        assert precision.choose_cpu(tiny, GenerateSettings(), tmp_path) is tiny
    assert "bf16's quality gate cannot be measured here" in caplog.text
