"""Checks on v2 input tensors that kserve leaves to the model (shared by predictor and transformer)."""

from __future__ import annotations

import numpy as np

from snapserve.http import kserve_compat
from snapserve.errors import ServingError


def check(tensor, integers: bool = False) -> None:
    """Shape non-negative and matching the JSON data; with ``integers``, every value an integer."""
    shape = list(tensor.shape or [])
    name = tensor.name
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
        raise ServingError("validation", f"input {name!r}: shape {shape} must be non-negative integers")
    data = tensor.data
    if not isinstance(data, list) or kserve_compat.has_raw_data(tensor):
        return  # binary data: kserve checked its size against the shape (gRPC raw: as_numpy does)
    try:
        values = np.asarray(data, dtype=object).ravel()
    except ValueError:
        raise ServingError("validation", f"input {name!r}: data is ragged") from None
    if values.size != int(np.prod(shape)):
        raise ServingError("validation", f"input {name!r}: shape {shape} does not match {values.size} values")
    if integers and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ServingError("validation", f"input {name!r}: {tensor.datatype} data must be integers")


def texts(tensor) -> list[str]:
    """A v2 BYTES input as UTF-8 strings (shape checked against the data), or a clear 400."""
    if tensor.datatype != "BYTES":
        raise ServingError("validation", f"input {tensor.name!r} must be BYTES")
    check(tensor)
    try:
        raw = tensor.as_numpy().reshape(-1).tolist()
        return [t.decode("utf-8") if isinstance(t, bytes) else t for t in raw]
    except Exception as exc:  # noqa: BLE001 - malformed tensor data is the client's
        raise ServingError("validation", f"input {tensor.name!r} is not valid UTF-8 text ({exc})") from None


def predictions(matrix: np.ndarray, labels: list[str] | None) -> list:
    """v1 ``predictions``: vectors, or for a classifier ``{"label", "score"}`` per row."""
    if labels is None:
        return matrix.tolist()
    return [{"label": lab, "score": float(row.max())} for lab, row in zip(labels, matrix, strict=True)]


def spec(name: str, datatype: str, shape: list[int]) -> dict:
    """One tensor of v2 model metadata (-1: any size)."""
    return {"name": name, "datatype": datatype, "shape": shape}


def output_specs(info) -> list[dict]:
    """The outputs ``response`` answers for this snapshot, as v2 model metadata."""
    from snapserve.metadata import EMBEDDING, RERANK

    if info.task == EMBEDDING:
        return [spec("embedding", "FP32", [-1, info.width])]
    specs = [spec("probabilities", "FP32", [-1, info.width]), spec("label", "BYTES", [-1])]
    return [*specs, spec("logits", "FP32", [-1, info.width])] if info.task == RERANK else specs


def sigmoid(x: np.ndarray) -> np.ndarray:
    """A cross-encoder's relevance logits as probabilities (sentence-transformers' CrossEncoder default)."""
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float64)))).astype(np.float32)  # no overflow


def response(model_name: str, response_id: str, matrix: np.ndarray, labels: list[str] | None,
             binary: bool, logits: np.ndarray | None = None):
    """v2 answer: FP32 ``embedding`` [n, dim], or ``probabilities`` [n, k] plus BYTES ``label`` [n]
    (plus FP32 ``logits`` [n, k] for a rerank snapshot)."""
    from kserve import InferOutput, InferResponse

    out = InferOutput(name="embedding" if labels is None else "probabilities", shape=list(matrix.shape),
                      datatype="FP32")
    out.set_data_from_numpy(matrix, binary_data=binary)
    outputs = [out]
    if labels is not None:
        label = InferOutput(name="label", shape=[len(labels)], datatype="BYTES")
        label.set_data_from_numpy(np.array([lab.encode() for lab in labels], dtype=np.object_), binary_data=binary)
        outputs.append(label)
    if logits is not None:
        raw = InferOutput(name="logits", shape=list(logits.shape), datatype="FP32")
        raw.set_data_from_numpy(logits, binary_data=binary)
        outputs.append(raw)
    return InferResponse(response_id=response_id, model_name=model_name, infer_outputs=outputs,
                         use_binary_outputs=binary)
