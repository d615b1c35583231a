"""Small client helpers for the integration tests."""

from __future__ import annotations

import httpx
import numpy as np

SENTENCES = ["A man is playing a guitar.", "Someone is strumming a guitar on stage.",
             "The stock market fell sharply today."]


def v1(url: str, model: str, texts: list[str]) -> np.ndarray:
    r = httpx.post(f"{url}/v1/models/{model}:predict", json={"instances": texts}, timeout=60)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["predictions"], dtype=np.float32)


def v2_text(url: str, model: str, texts: list[str]) -> np.ndarray:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}
    r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(axis=-1)
