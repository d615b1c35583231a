"""Per-request choices of an embedding request: Matryoshka ``dimensions`` and named prompts.

``dimensions`` keeps the first d columns of each vector and L2-normalises them again (a
Matryoshka-trained model's prefix is itself an embedding; sentence-transformers' ``truncate_dim``
does the same). A snapshot's ``config_sentence_transformers.json`` may declare the widths it was
trained for (``matryoshka_dims``) and its named ``prompts`` with a ``default_prompt_name``;
``prompt_name`` picks one per request, as in text-embeddings-inference. The prompt is prepended
before tokenisation, so token counts include it. v1/v2 take both in ``parameters``, the OpenAI
route in the body.
"""

from __future__ import annotations

import numpy as np

from snapserve import metadata
from snapserve.errors import ServingError


def plain(value):
    """A parameter as a Python value: gRPC requests carry ``InferParameter`` messages."""
    if hasattr(value, "WhichOneof"):
        kind = value.WhichOneof("parameter_choice")
        return getattr(value, kind) if kind else None
    return value


def flag(value, name: str, default: bool) -> bool:
    """A true/false parameter (None: ``default``), or a 400 naming it."""
    value = default if value is None else getattr(value, "bool_param", value)  # gRPC wraps parameters
    if not isinstance(value, bool):
        raise ServingError("validation", f"'{name}' must be true or false")
    return value


def allowed_dimensions(model) -> tuple[int, tuple[int, ...]]:
    """(the widest ``dimensions`` allowed, the declared Matryoshka widths or () for any up to it)."""
    width = model.info.width
    cap = min(width, model.settings.max_dimensions or width)
    declared = model.settings.matryoshka_dims or model.info.matryoshka_dims
    return cap, tuple(d for d in declared if d <= cap)


def dimensions(model, value) -> int | None:
    """The validated ``dimensions`` of a request (None: the full vector)."""
    value = plain(value)
    if value is None:
        return None
    if model.info.task != metadata.EMBEDDING:
        raise ServingError("validation", f"'dimensions' applies to embeddings; this model is {model.info.task!r}")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ServingError("validation", "'dimensions' must be an integer")
    cap, declared = allowed_dimensions(model)
    if value < 1 or value > cap:
        raise ServingError("validation", f"'dimensions' must be between 1 and {cap} for this model (got {value})")
    if declared and value not in (*declared, model.info.width):
        raise ServingError("validation", f"'dimensions' must be one of {', '.join(map(str, declared))} "
                           f"(the Matryoshka widths this model declares; got {value})")
    return None if value == model.info.width else value


def truncate(matrix: np.ndarray, dims: int | None) -> np.ndarray:
    """The first ``dims`` columns, each row L2-normalised again."""
    if dims is None:
        return matrix
    head = np.ascontiguousarray(matrix[:, :dims], dtype=np.float32)
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return head / np.maximum(norms, 1e-12)


def prompt(model, name) -> str:
    """The prompt text for ``prompt_name`` (else the snapshot's default prompt, else none)."""
    name = plain(name)
    prompts = model.info.prompts
    if name is None:
        return prompts.get(model.info.default_prompt_name, "") if model.info.default_prompt_name else ""
    if not isinstance(name, str):
        raise ServingError("validation", "'prompt_name' must be a string")
    if name not in prompts:
        known = ", ".join(sorted(prompts)) or "none: the snapshot declares no prompts"
        raise ServingError("validation", f"unknown 'prompt_name' {name!r} (known: {known})")
    return prompts[name]


def read(model, params: dict) -> dict:
    """A request's options from its parameters (or an OpenAI body): ``dimensions``, ``prompt``."""
    return {"dimensions": dimensions(model, params.get("dimensions")),
            "prompt": prompt(model, params.get("prompt_name"))}


def prompted(options: dict, texts: list[str]) -> list[str]:
    text = options.get("prompt") or ""
    return [text + t for t in texts] if text else texts
