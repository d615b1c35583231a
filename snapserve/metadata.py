"""What a snapshot folder says about its model, read once with one rule for each fact.

Both servers build a ``ModelInfo`` from the same files (the transformer's image holds the small
JSON files, not the weights): the task, labels, pad id, longest input, pooling and width.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

EMBEDDING, CLASSIFICATION = "embedding", "classification"
RERANK = "rerank"  # a one-label sequence classifier over (query, document) pairs: a cross-encoder
GENERATE = "generate"  # a causal LM (*ForCausalLM): text generation with continuous batching
TASKS = (EMBEDDING, CLASSIFICATION, RERANK, GENERATE)
DEFAULT_MAX_LENGTH = 512


class SnapshotInvalid(RuntimeError):
    """The model folder cannot be served; the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class Pooling:
    mode: str = "mean"  # mean | cls | max
    normalize: bool = False


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    task: str
    architectures: tuple[str, ...]
    labels: tuple[str, ...]
    pad_id: int
    max_length: int
    pooling: Pooling
    hidden_size: int
    vocab_size: int | None
    # sentence-transformers' config_sentence_transformers.json: named prompts, and Matryoshka widths
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    matryoshka_dims: tuple[int, ...] = ()
    type_vocab_size: int = 0  # segment ids a pair may use (BERT 2, RoBERTa/XLM-R 1); 0: not declared

    @property
    def width(self) -> int:
        """Columns of one output row: the label count of a classifier (1 for rerank), else the hidden size."""
        return len(self.labels) if self.task in (CLASSIFICATION, RERANK) else self.hidden_size


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def load_config(model_dir: Path) -> dict:
    """config.json, or SnapshotInvalid naming what is wrong with the folder."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SnapshotInvalid(f"model folder {model_dir} does not exist (set --model_dir / MODEL_DIR)")
    path = model_dir / "config.json"
    if not path.is_file():
        raise SnapshotInvalid(f"{path} is missing: not a Hugging Face snapshot")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise SnapshotInvalid(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise SnapshotInvalid(f"{path} is not a JSON object")
    return config


def detect_task(config: dict, override: str = "auto") -> str:
    if override != "auto":
        if override not in TASKS:
            raise SnapshotInvalid(f"--task {override!r}: expected auto or one of {', '.join(TASKS)}")
        return override
    if any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        # one label is the sentence-transformers CrossEncoder layout: a relevance logit per pair
        return RERANK if len(labels(config)) == 1 else CLASSIFICATION
    if any(a.endswith("ForCausalLM") for a in config.get("architectures") or []):
        return GENERATE
    return EMBEDDING


def labels(config: dict) -> tuple[str, ...]:
    id2label = config.get("id2label") or {}
    return tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label)))


def max_length(model_dir: Path, config: dict) -> int:
    """The longest input the snapshot declares: sentence-transformers first, then HF configs."""
    st = read_json(model_dir / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(st, int) and st > 0:
        return st
    tok = read_json(model_dir / "tokenizer_config.json").get("model_max_length")
    if isinstance(tok, int) and 0 < tok < 1_000_000:
        return tok
    pos = config.get("max_position_embeddings")
    return pos if isinstance(pos, int) and pos > 0 else DEFAULT_MAX_LENGTH


def pooling(model_dir: Path) -> Pooling:
    """Pooling from sentence-transformers' modules.json / *_Pooling/config.json; mean by default."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
    except (OSError, ValueError):
        return Pooling()
    mode, normalize = "mean", False
    for module in modules if isinstance(modules, list) else []:
        kind = module.get("type", "")
        if kind.endswith("Normalize"):
            normalize = True
        elif kind.endswith("Pooling"):
            cfg = read_json(model_dir / module.get("path", "") / "config.json")
            if cfg.get("pooling_mode_cls_token"):
                mode = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                mode = "max"
    return Pooling(mode, normalize)


def sentence_transformers(model_dir: Path, config: dict) -> dict:
    """Prompts and Matryoshka widths the snapshot declares (config_sentence_transformers.json; the
    widths also as ``matryoshka_dimensions`` in config.json, where vLLM reads them)."""
    st = read_json(model_dir / "config_sentence_transformers.json")
    prompts = st.get("prompts") if isinstance(st.get("prompts"), dict) else {}
    prompts = {str(k): v for k, v in prompts.items() if isinstance(v, str)}
    default = st.get("default_prompt_name")
    dims = st.get("matryoshka_dims") or st.get("matryoshka_dimensions") or config.get("matryoshka_dimensions") or ()
    dims = dims if isinstance(dims, list) else ()
    return {"prompts": prompts, "default_prompt_name": default if default in prompts else None,
            "matryoshka_dims": tuple(sorted({d for d in dims if isinstance(d, int) and not isinstance(d, bool) and d > 0}))}


def read(model_dir: str | Path, task: str = "auto", max_length_override: int = 0) -> ModelInfo:
    """Everything both servers need to know about the snapshot in ``model_dir``."""
    model_dir = Path(model_dir)
    config = load_config(model_dir)
    kind = detect_task(config, task)
    pad = config.get("pad_token_id")
    vocab = config.get("vocab_size")
    return ModelInfo(
        task=kind,
        architectures=tuple(config.get("architectures") or ()),
        labels=(labels(config) or ("LABEL_0",)) if kind in (CLASSIFICATION, RERANK) else (),
        pad_id=pad if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else 0,
        max_length=max_length_override or max_length(model_dir, config),
        pooling=pooling(model_dir),
        hidden_size=int(config.get("hidden_size") or 0),
        vocab_size=vocab if isinstance(vocab, int) and vocab > 0 else None,
        type_vocab_size=max(0, int(config.get("type_vocab_size") or 0)),
        **sentence_transformers(model_dir, config),
    )
