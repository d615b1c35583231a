"""A tiny randomly initialised cross-encoder snapshot for plumbing tests (never for quality)."""

from __future__ import annotations

import shutil
from pathlib import Path


def build(out: Path, model_dir: Path, seed: int = 13) -> Path:
    """BertForSequenceClassification(num_labels=1), the sentence-transformers CrossEncoder layout,
    with the default model's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # random but far from zero, so scores spread and segment ids visibly matter
        model.bert.embeddings.token_type_embeddings.weight.normal_(0, 1.0)
        model.bert.pooler.dense.weight.normal_(0, 0.5)
        model.classifier.weight.normal_(0, 1.0)
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(model_dir / name, out / name)
    return out
