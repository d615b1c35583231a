"""Fixtures for the speed features: a tiny random BERT snapshot (plumbing only, never quality)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, model_dir) -> Path:
    """A randomly initialised 2-layer BERT with the default model's tokenizer and mean pooling, short
    max_length (one compile bucket)."""
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                 "modules.json", "1_Pooling/config.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model_dir / name, out / name)
    (out / "sentence_bert_config.json").write_text('{"max_seq_length": 16, "do_lower_case": false}')
    return out
