"""checkov on every rendered ci values file: no failed check; every skip carries a reason in the chart."""

from __future__ import annotations

import re

import pytest

from tests.chart.chart_tools import CHART, CI_VALUES, values_id


@pytest.mark.parametrize("values", CI_VALUES, ids=values_id)
def test_checkov_has_no_failed_checks(checkov_results, values):
    result = checkov_results[values_id(values)]
    assert result["passed"] > 0, "checkov checked nothing in this file"
    assert not result["failed"], "\n".join(result["failed"])


def test_every_checkov_skip_in_the_chart_has_a_reason():
    skips = []
    for template in CHART.glob("templates/**/*.yaml"):
        skips += re.findall(r"checkov\.io/skip\d+:\s*(.*)", template.read_text())
    assert skips, "expected the documented skips of the helm test pod"
    for skip in skips:
        check, _, reason = skip.partition("=")
        assert re.fullmatch(r"CKV2?_K8S_\d+", check.strip()), skip
        assert len(reason.split()) >= 4, f"skip without a real reason: {skip}"
