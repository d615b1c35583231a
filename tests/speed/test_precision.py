"""--dtype auto on a CPU: bf16 only with native bf16 instructions and a passing start-up check."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.encoder import engine, precision


def test_bf16_instructions_are_found_by_torch_capability_or_cpu_flags():
    assert precision.cpu_has_bf16("AVX512_BF16", set())[0]
    assert precision.cpu_has_bf16("AMX", set())[0]
    ok, why = precision.cpu_has_bf16("AVX512", {"avx512f", "amx_bf16"})
    assert ok and "amx_bf16" in why
    ok, why = precision.cpu_has_bf16("AVX2", {"avx2", "fma"})
    assert not ok and "AVX2" in why


def test_cpu_flags_come_from_proc_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert precision.cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == set()


def test_the_check_is_the_worst_row_cosine():
    ref = np.eye(3, dtype=np.float32)
    assert precision.check(ref, ref * 2) == (True, pytest.approx(1.0))
    bent = ref.copy()
    bent[2] = [0, 0.1, 1]
    ok, worst = precision.check(ref, bent)
    assert not ok and worst == pytest.approx(1 / np.sqrt(1.01))
    assert precision.check(ref, ref[:2])[0] is False
    assert precision.check(ref, ref * np.nan)[0] is False


def test_auto_on_this_cpu_matches_what_it_has(model_dir, caplog):
    """bf16 exactly when this CPU has it, and then within cosine 0.999 of fp32; the verdict is logged."""
    caplog.set_level("INFO", "snapserve.predictor")
    auto = engine.TorchEngine(model_dir, engine.metadata.read(model_dir, "auto", 0), dtype="auto")
    native, _ = precision.cpu_has_bf16()
    assert auto.describe()["dtype"] == ("bfloat16" if native else "float32")
    if native:
        assert "precision check: bfloat16" in caplog.text and "kept" in caplog.text
    fp32 = engine.TorchEngine(model_dir, auto.info, dtype="float32")
    seqs = precision.probe_sequences(model_dir, auto.info)
    ok, worst = precision.check(fp32.execute(fp32.prepare(seqs)), auto.execute(auto.prepare(seqs)))
    print(f"\n--dtype auto on this CPU: {auto.describe()['dtype']}, cosine to fp32 {worst:.6f}")
    assert ok


def test_a_cpu_without_bf16_or_a_failed_check_keeps_fp32(model_dir, monkeypatch, caplog):
    info = engine.metadata.read(model_dir, "auto", 0)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: (False, "no bf16 here"))
    assert engine.TorchEngine(model_dir, info, dtype="auto").describe()["dtype"] == "float32"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: (True, "pretend"))
    monkeypatch.setattr(precision, "MIN_COSINE", 1.5)  # nothing passes: the fp32 model stays
    caplog.set_level("INFO", "snapserve.predictor")
    eng = engine.TorchEngine(model_dir, info, dtype="auto")
    assert eng.describe()["dtype"] == "float32" and "refused" in caplog.text
    assert next(eng.model.parameters()).dtype == engine.torch.float32


def test_onednn_kernel_caches_are_capped_unless_the_environment_sets_them():
    environ = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}
    assert precision.bound_kernel_caches(environ) == {"LRU_CACHE_CAPACITY": str(precision.KERNEL_CACHE_ENTRIES),
                                                      "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}
    assert environ["LRU_CACHE_CAPACITY"] == "128"
