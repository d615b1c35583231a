"""The images install what the tests ran: ci/lock/images.txt pins the serving stack, the tested venv
has those versions, and both Dockerfiles install under the lock."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVING = ("kserve", "fastapi", "starlette", "uvicorn", "pydantic", "numpy", "tokenizers", "grpcio", "httpx",
           "prometheus-client", "orjson", "transformers", "safetensors")


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "ci/lock/images.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize("package", SERVING)
def test_the_serving_stack_is_pinned_at_the_tested_version(package):
    assert lock().get(package) == importlib.metadata.version(package), "run `bash ci/lock.sh`"


@pytest.mark.parametrize("dockerfile", ["predictor/Dockerfile", "transformer/Dockerfile"])
def test_images_install_under_the_lock(dockerfile):
    text = (ROOT / dockerfile).read_text()
    assert "COPY ci/lock/images.txt" in text and "-c lock.txt" in text
