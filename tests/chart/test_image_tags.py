"""The images ci/build-images.sh names are the ones the chart deploys: for the default model with the
default values, and for a chat snapshot with each chat values file. Nothing is built (--dry-run)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from tests import readme_commands
from tests.chart.chart_tools import CHART, CI_VALUES, ROOT, component_container, find, helm, render, values_id

APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
CHAT_VALUES = [v for v in CI_VALUES if (yaml.safe_load(v.read_text()).get("predictor") or {}).get("task") == "generate"]


def dry_run(snapshot, **env: str) -> dict[str, str]:
    """What the script would build: {"predictor": ref, "transformer": ref, "snapshot": "<path> task=..."}."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TAG", "IMAGE_PREFIX", "MODEL_SNAPSHOT", "COMPONENTS")}
    proc = subprocess.run(["bash", "ci/build-images.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=60, env={**clean, "MODEL_SNAPSHOT": str(snapshot), **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines())


def fake_snapshot(folder, architecture: str):
    """Only what --dry-run reads: config.json (the task) and the manifest's presence."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "hidden_size": 8}))
    (folder / "snapserve-manifest.json").write_text("{}")
    return folder


def rendered_images(values=None, sets: tuple[str, ...] = ()) -> dict[str, str]:
    isvc = find(render("helm4", values, sets), "InferenceService")
    return {c: component_container(isvc, c)["image"] for c in ("predictor", "transformer")}


def test_default_build_is_what_the_default_values_deploy(tmp_path):
    built = dry_run(fake_snapshot(tmp_path / "encoder", "BertModel"))
    assert built["predictor"] == f"ghcr.io/snapserve/predictor:{APP_VERSION}", built
    assert {c: built[c] for c in ("predictor", "transformer")} == rendered_images()
    assert "task=embedding" in built["snapshot"]


@pytest.mark.parametrize("values", CHAT_VALUES, ids=values_id)
def test_chat_build_is_what_each_chat_values_file_deploys(values, tmp_path):
    built = dry_run(fake_snapshot(tmp_path / "chat", "Qwen2ForCausalLM"))
    assert built["predictor"] == f"ghcr.io/snapserve/predictor:{APP_VERSION}-generate", built
    assert {c: built[c] for c in ("predictor", "transformer")} == rendered_images(values), (
        f"{values.name} names images that `MODEL_SNAPSHOT=<chat snapshot> bash ci/build-images.sh` does not build")
    assert "task=generate" in built["snapshot"]


def test_a_registry_prefix_and_tag_reach_the_chart_through_the_documented_sets(tmp_path):
    built = dry_run(fake_snapshot(tmp_path / "chat", "Qwen2ForCausalLM"),
                    IMAGE_PREFIX="registry.example.com/team", TAG="mymodel-1")
    assert built["transformer"] == "registry.example.com/team/transformer:mymodel-1"
    sets = tuple(f"{c}.image.{k}={v}" for c in ("predictor", "transformer")
                 for k, v in zip(("repository", "tag"), built[c].rsplit(":", 1), strict=True))
    assert {c: built[c] for c in ("predictor", "transformer")} == rendered_images(sets=sets)


def test_readme_builds_and_installs_agree(tmp_path):
    """'Serve your own model': each documented build (chat, then embeddings) names the images that the
    documented `helm install` of the same model deploys, under the model name it sets."""
    section = "Serve your own model"
    builds = readme_commands.commands(section, "MODEL_SNAPSHOT=")
    installs = readme_commands.commands(section, "helm install")
    assert len(builds) == len(installs) == 2, (builds, installs)
    env = {"IMAGE_PREFIX": "registry.example.com/team"}
    for build, install, architecture in zip(builds, installs, ("Qwen2ForCausalLM", "BertModel"), strict=True):
        assert build.endswith("bash ci/build-images.sh --push"), build
        built = dry_run(fake_snapshot(tmp_path / architecture, architecture), **env)
        argv = readme_commands.helm_template_argv(install, str(helm("helm4")), env)
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0, f"{install}\n{proc.stderr}"
        isvc = next(d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "InferenceService")
        model_name = next(a for a in argv if a.startswith("modelName=")).removeprefix("modelName=")
        for component in ("predictor", "transformer"):
            container = component_container(isvc, component)
            assert container["image"] == built[component], (install, built)
            assert container["args"][container["args"].index("--model_name") + 1] == model_name


def test_at_least_the_two_chat_values_files_are_checked():
    assert {"generation", "generation-cpu"} <= {values_id(v) for v in CHAT_VALUES}


def test_a_snapshot_outside_the_build_context_is_staged_inside_it(tmp_path):
    """.dockerignore admits models/ and build/ only: a folder elsewhere is copied into build/ to be built."""
    outside = dry_run(fake_snapshot(tmp_path / "elsewhere", "BertModel"))
    assert "context=build/image-snapshot." in outside["snapshot"], outside
    inside = dry_run("models/all-MiniLM-L6-v2")
    assert inside["snapshot"].endswith("context=models/all-MiniLM-L6-v2"), inside


def test_a_folder_without_a_manifest_says_how_to_write_one(tmp_path):
    (tmp_path / "raw").mkdir()
    proc = subprocess.run(["bash", "ci/build-images.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=60, env={**os.environ, "MODEL_SNAPSHOT": str(tmp_path / "raw")})
    assert proc.returncode == 1
    assert "python -m snapserve.snapshot --src <your Hugging Face folder> --out" in proc.stderr, proc.stderr
