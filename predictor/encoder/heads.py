"""Task heads: what a forward pass's outputs become, one row per sequence (float32).

``embedding`` pools the last hidden states as the snapshot declares (mean, CLS or max, then
optional L2 normalisation); ``classification`` is a softmax over the logits; ``rerank`` keeps a
cross-encoder's one raw logit per (query, document) pair (the transformer applies the sigmoid). Each head names the
transformers Auto class that loads the weights it needs.
"""

from __future__ import annotations

import torch

from snapserve.metadata import CLASSIFICATION, EMBEDDING, RERANK, ModelInfo, Pooling


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


class EmbeddingHead:
    auto_class = "AutoModel"

    def __init__(self, info: ModelInfo):
        self.pooling = info.pooling

    def __call__(self, outputs, mask: torch.Tensor) -> torch.Tensor:
        return pool(outputs.last_hidden_state, mask, self.pooling)


class ClassificationHead:
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, info: ModelInfo):
        self.labels = info.labels

    def __call__(self, outputs, mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.logits.float(), dim=-1)


class RerankHead:
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, info: ModelInfo):
        self.labels = info.labels

    def __call__(self, outputs, mask: torch.Tensor) -> torch.Tensor:
        return outputs.logits.float()  # [n, 1]: raw, so raw_scores needs no inverse of a saturated sigmoid


HEADS = {EMBEDDING: EmbeddingHead, CLASSIFICATION: ClassificationHead, RERANK: RerankHead}


def for_task(info: ModelInfo):
    return HEADS[info.task](info)
