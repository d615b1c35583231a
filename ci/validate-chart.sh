#!/usr/bin/env bash
# Runs every chart check (tests/chart) and prints a values-file x check matrix: helm lint --strict and
# helm template with Helm 3 and 4, kubernetes-validate --strict (1.30, 1.37), strict CRD schemas,
# checkov, the KServe contract; then the rest: promtool check + unit tests of every alert, schema
# typos, render-time failures, freshness of manifests/, values.schema.json and the chart README, and
# (real servers on loopback) exported metrics, the NOTES curl lines and the helm test script. Extra
# arguments go to pytest (e.g. -x, -k lint).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
for step in ci/setup.d/40-helm.sh ci/setup.d/45-checkov.sh ci/setup.d/60-node.sh; do bash "$step" >/dev/null || exit 1; done
report=$(mktemp)
trap 'rm -f "$report"' EXIT
.venv/bin/python -m pytest -q -p no:cacheprovider tests/chart --junitxml="$report" "$@"
rc=$?
.venv/bin/python - "$report" <<'PY'
import collections, re, sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
files = ["defaults", "gpu", "gateway", "ingress-tls", "monitoring", "autoscaling", "serverless", "everything"]
per_file = {"lint_strict", "template_renders", "helm3_and_helm4_render_the_same", "core_kinds_validate_strictly",
            "custom_resources_match_crds_strictly", "checkov_has_no_failed_checks", "kserve_contract",
            "notes_print_url_and_curl", "values_files_match_the_schema", "predictor_accepts_rendered_args",
            "transformer_accepts_rendered_args_plus_kserve_injection"}
matrix, other = collections.defaultdict(dict), collections.Counter()
for case in cases:
    name = case.get("name")
    status = "FAIL" if case.find("failure") is not None or case.find("error") is not None else (
        "skip" if case.find("skipped") is not None else "ok")
    m = re.fullmatch(r"(test_\w+)\[(.+)\]", name)
    if m and m.group(1).removeprefix("test_") not in per_file:
        m = None
    vid = next((f for f in sorted(files, key=len, reverse=True) if m and re.search(rf"(^|-){f}($|-)", m.group(2))), None)
    if vid is None:
        other[status] += 1
        continue
    rest = m.group(2).replace(vid, "").strip("-")
    check = m.group(1).removeprefix("test_") + (f"[{rest}]" if rest else "")
    prev = matrix[check].get(vid)
    matrix[check][vid] = "FAIL" if "FAIL" in (prev, status) else status
width = max(len(c) for c in matrix) if matrix else 10
print("\n" + "check".ljust(width), *[f[:11].ljust(11) for f in files])
for check in sorted(matrix):
    print(check.ljust(width), *[matrix[check].get(f, "-").ljust(11) for f in files])
cells = [s for row in matrix.values() for s in row.values()]
print(f"\nmatrix: {cells.count('ok')}/{len(cells)} cells ok; other chart tests: {dict(other)}")
PY
exit "$rc"
