"""The hand-written embedding model of the baselines: transformers + torch, mean pooling, L2 normalise.

What people write when they serve a sentence-transformers model by hand; its output matches the
predictor's (same snapshot, same pooling). Used by baseline A, baseline B and the in-process limit.
"""

from __future__ import annotations

import time


class Encoder:
    def __init__(self, model_dir: str, device: str = "cpu", max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.torch = torch
        self.device = device
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype).to(device).eval()

    def encode(self, texts: list[str]) -> list[list[float]]:
        return self.encode_tensor(texts).tolist()

    def encode_tensor(self, texts: list[str]):
        torch = self.torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled.float(), p=2, dim=1).cpu()

    def warm_up(self, n: int = 3) -> float:
        start = time.perf_counter()
        for _ in range(n):
            self.encode(["warm up"] * 8)
        return time.perf_counter() - start
