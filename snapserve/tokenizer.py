"""Text -> token ids with the snapshot's fast tokenizer (``tokenizer.json``), truncated to the
model's maximum, and padding of id arrays into a batch. Pure ``tokenizers`` + numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from snapserve.errors import ServingError
from snapserve.metadata import ModelInfo


class Segmented(np.ndarray):
    """Token ids that carry their segment ids (``type_ids``, 1 on a pair's second text): still an
    id array to the batcher and to ``pad`` (``len`` is the token count), so pairs share its queue."""

    type_ids: np.ndarray

    @classmethod
    def of(cls, ids, type_ids) -> Segmented:
        out = np.asarray(ids, dtype=np.int64).view(cls)
        out.type_ids = np.asarray(type_ids, dtype=np.int64)
        return out


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
        # Truncation is a tokenizer's state and encoding runs on several threads at once: each rule
        # gets its own copy instead of switching the shared one back and forth.
        self.pair_tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        self.pair_tokenizer.enable_truncation(self.max_length, strategy="only_second")
        self.untruncated = Tokenizer.from_str(self.tokenizer.to_str())
        self.untruncated.no_truncation()

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(texts)]

    def encode_pairs(self, query: str, documents: list[str]) -> list[Segmented]:
        """(query, document) pairs with the tokenizer's pair template, cutting only the document
        (``only_second``): a query too long to leave room for any document is refused (422)."""
        try:
            encoded = self.pair_tokenizer.encode_batch([(query, d) for d in documents])
        except Exception as exc:  # tokenizers raises a bare Exception when the query alone is too long
            if "truncat" not in str(exc).lower():
                raise
            raise ServingError("unprocessable", f"the query leaves no room for a document within this model's "
                               f"{self.max_length} tokens; send a shorter query") from None
        return [Segmented.of(e.ids, e.type_ids) for e in encoded]

    def untruncated_pair_lengths(self, query: str, documents: list[str]) -> list[int]:
        """Token counts of (query, document) pairs before truncation."""
        return [len(e.ids) for e in self.untruncated.encode_batch([(query, d) for d in documents])]

    def untruncated_lengths(self, texts: list[str]) -> list[int]:
        """Token counts before truncation (to refuse over-long texts when asked to)."""
        return [len(e.ids) for e in self.untruncated.encode_batch(texts)]

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


def pad_type_ids(sequences: list[np.ndarray]) -> np.ndarray | None:
    """token_type_ids [n, L] for a batch holding ``Segmented`` pairs (0 for plain texts), else None."""
    if not any(isinstance(s, Segmented) for s in sequences):
        return None
    types = np.zeros((len(sequences), max(len(s) for s in sequences)), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if isinstance(seq, Segmented):
            types[row, : len(seq)] = seq.type_ids
    return types


def unpad(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
    """Rows of a padded batch back to their real tokens (the mask marks them)."""
    lengths = attention_mask.sum(axis=1)
    return [input_ids[row, : int(n)] for row, n in enumerate(lengths)]
