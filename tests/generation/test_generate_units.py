"""The generate task's detection and flags, without servers."""

from __future__ import annotations

import pytest

from predictor import config
from predictor.generate.settings import GenerateSettings
from snapserve import metadata


@pytest.mark.parametrize("architecture, task", [
    ("LlamaForCausalLM", "generate"), ("Qwen2ForCausalLM", "generate"), ("Qwen3ForCausalLM", "generate"),
    ("BertModel", "embedding"),
])
def test_causal_lms_are_detected(architecture, task):
    assert metadata.detect_task({"architectures": [architecture]}) == task


def test_the_snapshot_reads_as_generate_with_its_context(gen_dir):
    info = metadata.read(gen_dir)
    assert info.task == metadata.GENERATE and info.max_length == 8192


def test_generate_flags_and_env(monkeypatch):
    monkeypatch.setenv("MAX_QUEUE_REQUESTS", "7")
    s = config.load(["--model_name", "m", "--kv_blocks", "32", "--kv_page_size", "16", "--max_new_tokens", "9"])
    assert s.generate == GenerateSettings(kv_blocks=32, kv_page_size=16, max_queue_requests=7, max_new_tokens=9)
    assert s.generate.resolved(cuda=False) == {"page_size": 16, "num_blocks": 32, "max_batch_tokens": 256,
                                               "max_queue_size": 7, "seed": None, "allow_block_sharing": True}
    assert GenerateSettings().resolved(cuda=True)["num_blocks"] is None  # transformers sizes it from free memory


@pytest.mark.parametrize("kwargs", [{"kv_blocks": -1}, {"kv_page_size": 2}, {"max_queue_requests": 0},
                                    {"max_new_tokens": 0}])
def test_bad_generate_flags_fail_at_start(kwargs):
    with pytest.raises(ValueError, match="--"):
        GenerateSettings(**kwargs)
