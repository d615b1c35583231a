"""Text -> token ids with the snapshot's fast tokenizer (``tokenizer.json``), truncated to the
model's maximum, and padding of id arrays into a batch. Pure ``tokenizers`` + numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from snapserve.metadata import ModelInfo


class TextEncoder:
    """Encodes texts into id arrays (no padding) and pads id arrays into a batch."""

    def __init__(self, model_dir: str | Path, info: ModelInfo):
        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a fast tokenizer (tokenizer.json) is required")
        self.max_length = info.max_length
        self.pad_id = info.pad_id
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(texts)]

    def untruncated_lengths(self, texts: list[str]) -> list[int]:
        """Token counts before truncation (to refuse over-long texts when asked to)."""
        self.tokenizer.no_truncation()
        try:
            return [len(e.ids) for e in self.tokenizer.encode_batch(texts)]
        finally:
            self.tokenizer.enable_truncation(self.max_length)

    def pad(self, sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return pad(sequences, self.pad_id)


def pad(sequences: list[np.ndarray], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest: (input_ids [n, L], attention_mask [n, L]), both int64."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def unpad(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
    """Rows of a padded batch back to their real tokens (the mask marks them)."""
    lengths = attention_mask.sum(axis=1)
    return [input_ids[row, : int(n)] for row, n in enumerate(lengths)]
