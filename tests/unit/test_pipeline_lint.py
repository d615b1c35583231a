"""The pipeline itself: Dockerfiles pass hadolint, the workflow passes actionlint (with shellcheck over its
`run:` steps), the pipeline scripts pass shellcheck, and the workflow and e2e script stay wired to the
ci/ scripts, chart values and locust options they call."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yaml"
DOCKERFILES = [REPO / "predictor" / "Dockerfile", REPO / "transformer" / "Dockerfile"]
OUR_SCRIPTS = ["ci/lint.sh", "ci/build-images.sh", "ci/e2e-kind.sh", "ci/setup.d/50-podman.sh",
               "ci/setup.d/55-actionlint.sh"]


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert path, f"{name} is not installed: `make setup` (ci/setup.d/) installs it"
    return str(path)


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile):
    result = run(tool("hadolint"), str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_passes_actionlint_with_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck missing: ci/setup.d/55-actionlint.sh installs it"
    result = run(tool("actionlint"), str(WORKFLOW))
    assert result.returncode == 0, result.stdout + result.stderr


def test_pipeline_scripts_pass_shellcheck():
    result = run(tool("shellcheck"), "-x", *OUR_SCRIPTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_jobs_call_the_ci_scripts():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    assert set(jobs) == {"lint", "test", "chart", "manifests", "images", "e2e"}
    scripts = {job: " ".join(step.get("run", "") for step in spec["steps"]) for job, spec in jobs.items()}
    assert "bash ci/lint.sh" in scripts["lint"]
    assert "make test" in scripts["test"]
    assert "bash ci/validate-chart.sh" in scripts["chart"]
    assert "bash ci/render-manifests.sh --check" in scripts["manifests"]
    assert "bash ci/build-images.sh" in scripts["images"]
    assert "bash ci/e2e-kind.sh" in scripts["e2e"]
    for called in set(re.findall(r"bash (ci/[\w./-]+\.sh)", " ".join(scripts.values()))):
        assert (REPO / called).is_file(), f"the workflow calls {called}, which does not exist"
    # .ci/run (what our CI runs) and the workflow's test job (make test) both end in ci/test.sh.
    ci_run = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci_run or "bash ci/test.sh" in ci_run
    assert re.search(r"^test:.*\n\tbash ci/test\.sh", (REPO / "Makefile").read_text(), re.MULTILINE)


def test_build_args_exist_in_the_dockerfiles():
    predictor, transformer = (path.read_text() for path in DOCKERFILES)
    for arg in ("BASE", "TORCH", "TORCH_INDEX_URL", "MODEL_SNAPSHOT"):
        assert re.search(rf"^ARG {arg}\b", predictor, re.MULTILINE), f"predictor/Dockerfile lacks ARG {arg}"
    for arg in ("BASE", "MODEL_SNAPSHOT"):
        assert re.search(rf"^ARG {arg}\b", transformer, re.MULTILINE), f"transformer/Dockerfile lacks ARG {arg}"
    deps_stage = transformer.split("AS deps\n")[1].split("\nFROM ")[0]
    assert "torch" not in deps_stage and "optional-dependencies" not in deps_stage, "the transformer needs no torch"


def test_e2e_values_render_with_the_chart_and_name_the_built_images():
    values = yaml.safe_load((REPO / "ci" / "e2e-values.yaml").read_text())
    script = (REPO / "ci" / "e2e-kind.sh").read_text()
    tag = re.search(r"^TAG=\$\{TAG:-(\w+)\}", script, re.MULTILINE).group(1)
    for component in ("predictor", "transformer"):
        image = values[component]["image"]
        assert (image["repository"], image["tag"]) == (f"snapserve/{component}", tag)
        assert f'"snapserve/{component}:$TAG"' in script, f"e2e-kind.sh does not kind-load {component}"
        assert image["pullPolicy"] == "IfNotPresent", "kind-loaded images must not be pulled"
    rendered = run(tool("helm"), "template", "snapserve", "charts/snapserve", "-n", "snapserve",
                   "-f", "ci/e2e-values.yaml", "--set", "kserve.deploymentMode=Standard")
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"InferenceService", "Ingress"} <= kinds
    # Every container running a kind-loaded image (servers and helm test pods) must not pull it.
    for doc in docs:
        for container in _containers(doc):
            if container["image"].startswith("snapserve/"):
                assert container.get("imagePullPolicy") == "IfNotPresent", (doc["kind"], container["name"])
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "Pod":
        return doc["spec"]["containers"]
    if doc["kind"] == "InferenceService":
        return [c for part in ("predictor", "transformer") for c in doc["spec"].get(part, {}).get("containers", [])]
    return []


def test_e2e_locust_options_exist_in_the_locustfile():
    """The SLO gate and model options the e2e script passes are ones the locustfile declares."""
    script = (REPO / "ci" / "e2e-kind.sh").read_text()
    used = set(re.findall(r"(--(?:slo-[\w-]+|model-name))", script))
    assert {"--slo-p99-ms", "--slo-max-failure-ratio", "--model-name"} <= used
    # locust in its own process (never imported beside kserve); --list parses every option, then lists
    # the user classes, so an option the locustfile does not declare fails here (argparse exit 2).
    options = [arg for opt in sorted(used) for arg in (opt, "2000" if opt.startswith("--slo-p99") else "0.5")]
    listed = run(tool("locust"), "-f", "loadtest/locust/locustfile.py", "--list", *options)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    user_classes = re.findall(r"--only-summary ([\w ]+)$", script, re.MULTILINE)[0].split()
    assert user_classes
    for user_class in user_classes:
        assert re.search(rf"^\s+{user_class}$", listed.stdout, re.MULTILINE), f"locustfile has no {user_class}"
