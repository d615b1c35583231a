"""Both images, built with podman from the local Debian 12 base, serve a request: transformer -> predictor.

The images are built by ``ci/build-images.sh --local`` (what a person runs) and started from
``podman image mount`` under ``chroot --userspec`` as their own non-root USER (see imagerun.py), on
the image's read-only root file system with a tmpfs /tmp: what the chart's pods get
(readOnlyRootFilesystem, an emptyDir at /tmp).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import imagerun
import pytest

# A first build on a fresh machine (pip installs torch, kserve, ...) outlasts the suite-wide timeout.
pytestmark = [pytest.mark.images, pytest.mark.timeout(1800)]

PREFIX, TAG = "localhost/snapserve-test", "test"
MODEL = Path(os.environ.get("SNAPSERVE_MODEL_DIR", imagerun.ROOT / "models" / "all-MiniLM-L6-v2"))
TEXTS = ["A man is eating food.", "Snapshots are baked into the image at /mnt/models."]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    imagerun.require_podman()
    log = tmp_path_factory.mktemp("build") / "build.log"
    imagerun.build(PREFIX, TAG, log)
    mounted = {c: imagerun.Image.mount(f"{PREFIX}/{c}:{TAG}") for c in ("predictor", "transformer")}
    for image in mounted.values():
        print(f"{image.name}: {image.size / 1e6:.0f} MB in {len(image.layers)} layers")
    yield mounted
    for image in mounted.values():
        image.unmount()


def site_packages(image: imagerun.Image) -> Path:
    return next((image.root / "opt/venv/lib").glob("python3*/site-packages"))


@pytest.mark.parametrize("component", ["predictor", "transformer"])
def test_image_runs_non_root_offline_with_no_build_leftovers(images, component):
    image = images[component]
    config = image.config
    uid = config["User"].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-root id, got {config['User']!r}"
    assert config["Entrypoint"] == ["python", "-m", component]
    assert config["Cmd"] == ["--model_dir", "/mnt/models", "--http_port", "8080", "--grpc_port", "8081"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["MODEL_DIR"] == "/mnt/models"
    for leftover in ("root/.cache/pip", "usr/bin/gcc", "usr/bin/cc", "src/requirements.txt"):
        assert not (image.root / leftover).exists(), f"{component} image keeps {leftover}"
    assert not list(image.root.glob("opt/venv/bin/pip*")), "pip stays in the build stage"
    assert not list((image.root / "mnt/models").rglob("*.bin")), "pickle weights are never baked"
    # The baked snapshot matches its manifest (the predictor checks it again at start).
    check = subprocess.run([sys.executable, "-m", "snapserve.snapshot", "--src", str(image.root / "mnt/models")],
                           check=False, cwd=imagerun.ROOT, capture_output=True, text=True)
    assert check.returncode == 0 and "manifest verified" in check.stdout, check.stderr


def test_transformer_image_has_no_torch_and_no_weights(images):
    image = images["transformer"]
    packages = site_packages(image)
    for heavy in ("torch", "transformers"):
        assert not (packages / heavy).exists(), f"the transformer image must not ship {heavy}"
    for needed in ("kserve", "tokenizers", "numpy", "prometheus_client", "orjson"):
        assert (packages / needed).is_dir(), f"the transformer image lacks {needed}"
    models = image.root / "mnt/models"
    assert (models / "tokenizer.json").is_file()
    assert not list(models.glob("*.safetensors")), "the transformer bakes tokenizer files only"
    assert image.size < images["predictor"].size / 2
    print(f"\ntransformer image: {image.size / 1e6:.0f} MB (target <= 300 MB; the predictor's: "
          f"{images['predictor'].size / 1e6:.0f} MB)")
    assert image.size <= 300e6, f"transformer image is {image.size / 1e6:.0f} MB, over the 300 MB target"


def test_predictor_image_bakes_the_model_in_its_last_layer(images, tmp_path):
    """A new model version rebuilds only the model layer: every earlier layer is shared."""
    image = images["predictor"]
    assert (image.root / "mnt/models/model.safetensors").is_file()
    assert (site_packages(image) / "torch").is_dir()
    sized = [(created, size) for created, size in image.history() if size > 0]
    assert "/mnt/models" in sized[-1][0], f"the model is not the last layer: {sized[-3:]}"
    assert "/app/predictor" in sized[-2][0] and "/app/snapserve" in sized[-3][0], sized[-4:]
    assert "/opt/venv" in sized[-4][0], sized[-4:]

    # Another model version (a re-export with one changed config value) in the build context.
    other = imagerun.ROOT / "build" / "images-test-model"
    shutil.rmtree(other, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "snapserve.snapshot", "--src", str(MODEL), "--out", str(other)],
                   cwd=imagerun.ROOT, check=True, capture_output=True)
    st_config = other / "sentence_bert_config.json"
    st_config.write_text(json.dumps({**json.loads(st_config.read_text()), "max_seq_length": 128}))
    subprocess.run([sys.executable, "-m", "snapserve.snapshot", "--src", str(other), "--out", str(other) + ".2"],
                   cwd=imagerun.ROOT, check=True, capture_output=True)
    try:
        imagerun.build(PREFIX, "test-model2", tmp_path / "build.log",
                       MODEL_SNAPSHOT="build/images-test-model.2")
        rebuilt = imagerun.Image.mount(f"{PREFIX}/predictor:test-model2")
        try:
            assert rebuilt.layers[:-1] == image.layers[:-1], "a model change rebuilt more than the model layer"
            assert rebuilt.layers[-1] != image.layers[-1]
        finally:
            rebuilt.unmount()
    finally:
        shutil.rmtree(other, ignore_errors=True)
        shutil.rmtree(str(other) + ".2", ignore_errors=True)
        for component in ("predictor", "transformer"):
            subprocess.run(["podman", "rmi", f"{PREFIX}/{component}:test-model2"], check=False, capture_output=True)


def reference_embeddings(texts: list[str]) -> list[list[float]]:
    """all-MiniLM-L6-v2 computed directly with transformers (mean pooling, L2 norm), in its own process."""
    code = """
import json, sys, torch
from transformers import AutoModel, AutoTokenizer
d, texts = sys.argv[1], json.loads(sys.argv[2])
tok, model = AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d).eval()
batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).float()
emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
print(json.dumps(emb.tolist()))
"""
    out = subprocess.run([sys.executable, "-c", code, str(MODEL), json.dumps(texts)], check=True,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout)


def test_one_request_through_transformer_and_predictor_images(images, tmp_path):
    http, grpc, t_http, t_grpc = (imagerun.free_port() for _ in range(4))
    logs = {c: tmp_path / f"{c}.log" for c in ("predictor", "transformer")}
    predictor = images["predictor"].start(
        ["--model_name", "snap", "--model_dir", "/mnt/models", "--http_port", str(http),
         "--grpc_port", str(grpc), "--device", "cpu"], logs["predictor"])
    transformer = None
    try:
        imagerun.wait_ready(f"http://127.0.0.1:{http}/v2/models/snap/ready", predictor, logs["predictor"])
        transformer = images["transformer"].start(
            ["--model_name", "snap", "--model_dir", "/mnt/models", "--predictor_host", f"127.0.0.1:{http}",
             "--http_port", str(t_http), "--grpc_port", str(t_grpc)], logs["transformer"])
        imagerun.wait_ready(f"http://127.0.0.1:{t_http}/v2/models/snap/ready", transformer, logs["transformer"])
        for proc, component in ((predictor, "predictor"), (transformer, "transformer")):
            uid = int(images[component].config["User"].split(":")[0])
            assert imagerun.uid_of(proc.pid) == uid, f"{component} does not run as its image's USER"

        reply = httpx.post(f"http://127.0.0.1:{t_http}/v1/models/snap:predict", json={"instances": TEXTS},
                           timeout=60)
        assert reply.status_code == 200, reply.text
        got = reply.json()["predictions"]
        assert len(got) == len(TEXTS) and all(len(v) == 384 for v in got)
        for vector, expected in zip(got, reference_embeddings(TEXTS), strict=True):
            assert math.isclose(math.fsum(x * x for x in vector), 1.0, abs_tol=1e-3)
            cosine = math.fsum(a * b for a, b in zip(vector, expected, strict=True))
            assert cosine > 0.999, f"image embedding differs from the reference (cosine {cosine:.5f})"
    finally:
        for proc in (transformer, predictor):
            if proc is not None:
                imagerun.stop(proc)
        print(imagerun.tail(logs["predictor"], 5), imagerun.tail(logs["transformer"], 5), sep="\n")


def test_predictor_image_refuses_an_altered_snapshot(images, tmp_path):
    """The image's predictor checks snapserve-manifest.json at start: one flipped byte, no serving."""
    altered = tmp_path / "models"
    shutil.copytree(images["predictor"].root / "mnt/models", altered)
    weights = altered / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.seek(weights.stat().st_size - 16)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x01]))
    log = tmp_path / "predictor.log"
    http, grpc = imagerun.free_port(), imagerun.free_port()
    proc = images["predictor"].start(["--model_name", "snap", "--model_dir", "/mnt/models", "--http_port", str(http),
                                      "--grpc_port", str(grpc), "--device", "cpu"], log, binds={"/mnt/models": altered})
    try:
        rc = proc.wait(timeout=180)
    finally:
        imagerun.stop(proc)
    assert rc != 0, f"the predictor served an altered snapshot:\n{imagerun.tail(log)}"
    assert "model.safetensors: SHA-256 does not match" in log.read_text(), imagerun.tail(log)
