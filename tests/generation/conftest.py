"""A real predictor + transformer pair on the exported SmolLM2-135M-Instruct snapshot, for the session."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import httpx
import pytest

from tests import procs

GEN_DIR = procs.ROOT / "models" / "SmolLM2-135M-Instruct"
NAME = "smol"


@dataclasses.dataclass
class Pair:
    predictor_url: str
    transformer_url: str
    model_name: str
    model_dir: Path

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of the predictor's /metrics (0 when absent)."""
        text = httpx.get(f"{self.predictor_url}/metrics", timeout=10).text
        match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0


def start_pair(model_dir: Path, logs: Path, name: str = NAME, predictor_extra: list[str] = ()) -> tuple:
    predictor, _ = procs.start_predictor(model_name=name, model_dir=model_dir, extra=list(predictor_extra),
                                         log_dir=logs, timeout=300)
    try:
        transformer, _ = procs.start_transformer(predictor.url.removeprefix("http://"), model_name=name,
                                                 model_dir=model_dir, log_dir=logs)
    except Exception:
        predictor.stop()
        raise
    return predictor, transformer


@pytest.fixture(scope="session")
def gen_dir() -> Path:
    if not (GEN_DIR / "model.safetensors").is_file():
        pytest.fail(f"generative model missing at {GEN_DIR}: run `bash ci/setup.d/35-model-generate.sh` "
                    "(or `bash ci/setup.sh`)")
    return GEN_DIR


@pytest.fixture(scope="session")
def pair(gen_dir, tmp_path_factory) -> Pair:
    logs = tmp_path_factory.mktemp("generation-logs")
    # float32: these tests hold greedy tokens to fp32 generate's, token for token (--dtype auto takes bf16 on a
    # CPU with native bf16, within its gate: close, not equal; tests/generation/test_bf16_auto.py)
    predictor, transformer = start_pair(gen_dir, logs, predictor_extra=["--max_queue_requests", "64",
                                                                        "--dtype", "float32"])
    yield Pair(predictor.url, transformer.url, NAME, gen_dir)
    transformer.stop()
    predictor.stop()


@pytest.fixture(scope="session")
def reference(gen_dir):
    """transformers' own model.generate on the same snapshot: the greedy reference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gen_dir, dtype=torch.float32, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(gen_dir, local_files_only=True)

    def greedy(ids: list[int], max_new_tokens: int) -> list[int]:
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=2, pad_token_id=2)
        return out[0, len(ids):].tolist()

    return greedy, tokenizer
