"""A client that knows nothing but ``GET /v2/models/{name}``: it builds a request from the listed
inputs and checks the answer against the listed outputs."""

from __future__ import annotations

import httpx
import numpy as np


def concrete(shape: list[int], rows: int = 2, length: int = 5) -> list[int]:
    """A metadata shape with its -1s filled: the first is the batch, a second the sequence length."""
    return [d if d != -1 else (rows if i == 0 else length) for i, d in enumerate(shape)]


def fill(spec: dict) -> dict:
    shape = concrete(spec["shape"])
    count = int(np.prod(shape))
    if spec["datatype"] == "BYTES":
        data = [f"text number {i}" for i in range(count)]
    elif spec["datatype"].startswith(("INT", "UINT")):
        data = [1] * count  # a valid token id, attention 1, segment 1: fine for any of the listed inputs
    else:
        data = [0.5] * count
    return {"name": spec["name"], "datatype": spec["datatype"], "shape": shape, "data": data}


def matches(shape: list[int], declared: list[int]) -> bool:
    return len(shape) == len(declared) and all(d in (-1, s) for s, d in zip(shape, declared, strict=True))


def infer_from_metadata(url: str, model: str) -> tuple[dict, dict]:
    """-> (metadata, answer); asserts the answer has exactly the declared outputs."""
    meta = httpx.get(f"{url}/v2/models/{model}", timeout=30).json()
    body = {"inputs": [fill(spec) for spec in meta["inputs"]]}
    r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60)
    assert r.status_code == 200, (meta, r.text)
    answer = r.json()
    declared = {o["name"]: o for o in meta["outputs"]}
    got = {o["name"]: o for o in answer["outputs"]}
    assert set(got) == set(declared), (got.keys(), declared.keys())
    for name, out in got.items():
        assert out["datatype"] == declared[name]["datatype"], name
        assert matches(out["shape"], declared[name]["shape"]), (name, out["shape"], declared[name]["shape"])
    return meta, answer
