"""What the snapshot computes: sentence embeddings (pooling the snapshot declares, optional L2
normalisation) or sequence classification (softmax over ``id2label``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

EMBEDDING, CLASSIFICATION = "embedding", "classification"


@dataclasses.dataclass(frozen=True)
class Pooling:
    mode: str = "mean"  # mean | cls | max
    normalize: bool = False


def detect_task(config: dict, override: str = "auto") -> str:
    if override != "auto":
        return override
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return CLASSIFICATION
    return EMBEDDING


def read_pooling(model_dir: Path) -> Pooling:
    """Pooling from sentence-transformers' modules.json / *_Pooling/config.json; mean by default."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
    except (OSError, ValueError):
        return Pooling()
    mode, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Normalize"):
            normalize = True
        elif kind.endswith("Pooling"):
            try:
                cfg = json.loads((model_dir / module.get("path", "") / "config.json").read_text())
            except (OSError, ValueError):
                cfg = {}
            if cfg.get("pooling_mode_cls_token"):
                mode = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                mode = "max"
    return Pooling(mode, normalize)


def pool(hidden: torch.Tensor, mask: torch.Tensor, spec: Pooling) -> torch.Tensor:
    """[n, L, d] hidden states + [n, L] mask -> [n, d] sentence vectors (float32)."""
    hidden = hidden.float()
    if spec.mode == "cls":
        out = hidden[:, 0]
    elif spec.mode == "max":
        out = hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        out = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if spec.normalize:
        out = torch.nn.functional.normalize(out, p=2, dim=1)
    return out


def labels(config: dict) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label))]
