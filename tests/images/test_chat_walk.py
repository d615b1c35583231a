"""README 'Serve your own model', walked with a chat model of one's own: a tiny random Qwen2 folder
(plumbing only: its words mean nothing) -> the documented snapshot command -> both images built by
``ci/build-images.sh --local`` with the default tag, from a snapshot folder outside the build context ->
the documented ``helm install`` rendered -> the InferenceService names those images and that model ->
both images served from their root file systems with the rendered args and env -> one chat completion.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import shutil
import subprocess
import sys

import httpx
import imagerun
import pytest
import yaml

from tests import readme_commands
from tests.chart.chart_tools import CHART, component_container, helm

pytestmark = [pytest.mark.images, pytest.mark.timeout(1800)]

SECTION = "Serve your own model"
PREFIX = "localhost/snapserve-walk"
TOKENIZER = imagerun.ROOT / "models" / "SmolLM2-135M-Instruct"  # a ChatML tokenizer and template, as Qwen2 has
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def documented(start: str) -> str:
    """The README's first (the chat model's) command of this kind."""
    found = readme_commands.commands(SECTION, start)
    assert found, f"README '{SECTION}' has no command starting {start!r}"
    return found[0]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """The documented snapshot command, on a Hugging Face folder that save_pretrained wrote."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if not (TOKENIZER / "tokenizer.json").is_file():
        pytest.fail(f"{TOKENIZER} missing: run `bash ci/setup.d/35-model-generate.sh` (or `bash ci/setup.sh`)")
    src = tmp_path_factory.mktemp("hf-qwen2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER / name, src / name)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=2, bos_token_id=1, pad_token_id=2, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(src)
    out = tmp_path_factory.mktemp("snapshot")  # under /tmp: outside models/ and build/
    command = documented(".venv/bin/python -m snapserve.snapshot")
    argv = shlex.split(re.sub(r"--src \S+ --out \S+", f"--src {src} --out {out}", command))
    argv[0] = sys.executable
    proc = subprocess.run(argv, cwd=imagerun.ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, f"{command}\n{proc.stdout}{proc.stderr}"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    return out


@pytest.fixture(scope="module")
def images(request, tmp_path_factory):
    imagerun.require_podman()  # before the snapshot: a machine that cannot build skips at once
    snapshot = request.getfixturevalue("snapshot")
    command = documented("MODEL_SNAPSHOT=")
    assert command.endswith("bash ci/build-images.sh --push"), command
    log = tmp_path_factory.mktemp("build") / "build.log"
    # As documented with no TAG, --local instead of --push (no registry here): the default tag is what
    # the chat values files name.
    built = imagerun.build(PREFIX, None, log, MODEL_SNAPSHOT=str(snapshot))
    text = log.read_text()
    assert "outside models/ and build/" in text, "the outside snapshot was not staged into the build context"
    assert built == {c: f"{PREFIX}/{c}:{APP_VERSION}-generate" for c in ("predictor", "transformer")}, built
    print("\n" + "\n".join(line for line in text.splitlines() if re.match(r"build-images: \S+ \d+ MB$", line)))
    mounted = {c: imagerun.Image.mount(name) for c, name in built.items()}
    for image in mounted.values():
        print(f"{image.name}: {image.size / 1e6:.0f} MB in {len(image.layers)} layers")
    yield mounted
    for image in mounted.values():
        image.unmount()
    for name in built.values():
        subprocess.run(["podman", "rmi", name], check=False, capture_output=True)
    assert not list((imagerun.ROOT / "build").glob("image-snapshot.*")), "the staged snapshot was left behind"


@pytest.fixture(scope="module")
def isvc():
    """The documented chat `helm install`, rendered with this test's image prefix."""
    argv = readme_commands.helm_template_argv(documented("helm install"), str(helm("helm4")),
                                              {"IMAGE_PREFIX": PREFIX})
    proc = subprocess.run(argv, cwd=imagerun.ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (doc,) = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "InferenceService"]
    model = next(a for a in argv if a.startswith("modelName=")).removeprefix("modelName=")
    return doc, model


def test_chat_images_bake_the_causal_lm(images):
    predictor, transformer = images["predictor"], images["transformer"]
    models = predictor.root / "mnt/models"
    assert json.loads((models / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    assert (models / "model.safetensors").is_file()
    assert not (models / "model.onnx").exists(), "a causal LM gets no ONNX export"
    check = subprocess.run([sys.executable, "-m", "snapserve.snapshot", "--src", str(models)], check=False,
                           cwd=imagerun.ROOT, capture_output=True, text=True)
    assert check.returncode == 0 and "manifest verified" in check.stdout, check.stderr
    tokenizer = transformer.root / "mnt/models"
    assert "chat_template" in json.loads((tokenizer / "tokenizer_config.json").read_text())
    assert not list(tokenizer.glob("*.safetensors"))
    print(f"\nchat images: predictor {predictor.size / 1e6:.0f} MB, transformer {transformer.size / 1e6:.0f} MB")


def test_the_rendered_inference_service_names_the_built_images_and_model(images, isvc):
    doc, model = isvc
    for component in ("predictor", "transformer"):
        container = component_container(doc, component)
        assert container["image"] == images[component].name
        args = container["args"]
        assert args[args.index("--model_name") + 1] == model
    predictor_args = component_container(doc, "predictor")["args"]
    assert predictor_args[predictor_args.index("--task") + 1] == "generate"
    assert predictor_args[predictor_args.index("--device") + 1] == "cpu"


def pod_env(container: dict) -> dict[str, str]:
    """The container's env as the kubelet sets it; a resourceFieldRef reads the container's limit."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "resourceFieldRef" in item:
            limit = container["resources"]["limits"][item["resourceFieldRef"]["resource"].split(".")[1]]
            env[item["name"]] = str(math.ceil(float(limit)))
    return env


def with_ports(args: list[str], http: int, grpc: int) -> list[str]:
    out = list(args)
    for flag, port in (("--http_port", http), ("--grpc_port", grpc)):
        out[out.index(flag) + 1] = str(port)
    return out


def test_serve_the_images_as_rendered_and_chat(images, isvc, tmp_path):
    doc, model = isvc
    p_http, p_grpc, t_http, t_grpc = (imagerun.free_port() for _ in range(4))
    logs = {c: tmp_path / f"{c}.log" for c in ("predictor", "transformer")}
    containers = {c: component_container(doc, c) for c in ("predictor", "transformer")}
    for component, container in containers.items():
        assert container["command"] == images[component].config["Entrypoint"]
    predictor = images["predictor"].start(with_ports(containers["predictor"]["args"], p_http, p_grpc),
                                          logs["predictor"], env=pod_env(containers["predictor"]))
    transformer = None
    try:
        imagerun.wait_ready(f"http://127.0.0.1:{p_http}/v2/models/{model}/ready", predictor, logs["predictor"])
        # KServe appends --predictor_host to a transformer's args
        args = [*with_ports(containers["transformer"]["args"], t_http, t_grpc), "--predictor_host",
                f"127.0.0.1:{p_http}"]
        transformer = images["transformer"].start(args, logs["transformer"], env=pod_env(containers["transformer"]))
        imagerun.wait_ready(f"http://127.0.0.1:{t_http}/v2/models/{model}/ready", transformer, logs["transformer"])
        models = httpx.get(f"http://127.0.0.1:{t_http}/openai/v1/models", timeout=30)
        assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == [model], models.text
        reply = httpx.post(f"http://127.0.0.1:{t_http}/openai/v1/chat/completions", timeout=120, json={
            "model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4,
            "ignore_eos": True, "temperature": 0})
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["model"] == model and answer["usage"]["completion_tokens"] == 4
        assert answer["choices"][0]["finish_reason"] == "length"
        assert isinstance(answer["choices"][0]["message"]["content"], str)
    finally:
        for proc in (transformer, predictor):
            if proc is not None:
                imagerun.stop(proc)
        print(imagerun.tail(logs["predictor"], 5), imagerun.tail(logs["transformer"], 5), sep="\n")
