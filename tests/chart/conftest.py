"""Fixtures for the chart checks: one checkov run over every rendered ci values file."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.chart.chart_tools import CI_VALUES, ROOT, render_text, values_id

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="session")
def checkov_results(tmp_path_factory) -> dict[str, dict]:
    """checkov's report per values-file id: {"failed": [...], "passed": int, "skipped": [...]}."""
    assert CHECKOV.is_file(), f"{CHECKOV} missing: run `bash ci/setup.d/45-checkov.sh` (make test does)"
    folder = tmp_path_factory.mktemp("rendered")
    for values in CI_VALUES:
        (folder / f"{values_id(values)}.yaml").write_text(render_text("helm4", values))
    proc = subprocess.run(
        [str(CHECKOV), "--directory", str(folder), "--framework", "kubernetes", "--skip-download",
         "--output", "json", "--compact"],  # not --quiet: it drops the passed checks
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert proc.stdout.strip(), f"checkov printed nothing (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    out = {values_id(v): {"failed": [], "passed": 0, "skipped": []} for v in CI_VALUES}
    for rep in reports:
        results = rep.get("results", {})
        for status, key in (("failed_checks", "failed"), ("passed_checks", "passed"), ("skipped_checks", "skipped")):
            for check in results.get(status, []):
                vid = check["file_path"].rsplit("/", 1)[-1].removesuffix(".yaml")
                entry = f"{check['check_id']} {check['resource']}: {check.get('check_name', '')}"
                if key == "passed":
                    out[vid]["passed"] += 1
                else:
                    out[vid][key].append(entry)
    return out
