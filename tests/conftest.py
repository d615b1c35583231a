"""Session fixtures: one real predictor + transformer pair on loopback with the default model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests import procs


@dataclasses.dataclass
class Servers:
    predictor_url: str
    transformer_url: str
    predictor_grpc: str
    transformer_grpc: str
    model_name: str
    model_dir: Path
    predictor: procs.Server
    transformer: procs.Server


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not (procs.MODEL_DIR / "model.safetensors").is_file():
        pytest.fail(f"default model missing at {procs.MODEL_DIR}: run `make setup`")
    return procs.MODEL_DIR


@pytest.fixture(scope="session")
def servers(model_dir, tmp_path_factory) -> Servers:
    logs = tmp_path_factory.mktemp("server-logs")
    # request-id tests read the predictor's access lines and the transformer's predictor-call lines
    predictor, p_grpc = procs.start_predictor(model_dir=model_dir, log_dir=logs, extra=["--log_access", "true"])
    host = predictor.url.removeprefix("http://")
    try:
        transformer, t_grpc = procs.start_transformer(host, model_dir=model_dir, log_dir=logs,
                                                      extra=["--log_predictor_calls", "true"])
    except Exception:
        predictor.stop()
        raise
    yield Servers(predictor.url, transformer.url, f"127.0.0.1:{p_grpc}", f"127.0.0.1:{t_grpc}", "snap",
                  model_dir, predictor, transformer)
    transformer.stop()
    predictor.stop()
