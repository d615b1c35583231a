"""values.yaml documents every key; values.schema.json closes every object."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.chart.chart_tools import CHART, CI_VALUES, values_id

VALUES = CHART / "values.yaml"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
KEY = re.compile(r"^\s*(- )?[A-Za-z_][\w.\-/]*:")


def test_every_values_key_is_commented():
    lines = VALUES.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        if not KEY.match(line):
            continue
        above = lines[i - 1].strip() if i else ""
        if not (above.startswith(("#", "- #")) or "#" in line.split(":", 1)[1]):
            missing.append(f"{i + 1}: {line.strip()}")
    assert not missing, "keys without a comment:\n" + "\n".join(missing)


def walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def test_schema_closes_every_object():
    # `global` is where Helm puts a parent chart's globals when snapserve is a subchart.
    open_objects = [
        path for path, node in walk(SCHEMA)
        if node.get("type") == "object" and node.get("additionalProperties") is not False
        and not isinstance(node.get("additionalProperties"), dict) and not path.endswith(".global")
        and "$ref" not in node
    ]
    assert not open_objects, open_objects


def merged(base: dict, override: dict) -> dict:
    """Helm's coalescing of a values file over the defaults (maps merge, null deletes the key, everything
    else replaces)."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


@pytest.mark.parametrize("values", [VALUES, *CI_VALUES], ids=lambda p: values_id(p) if p != VALUES else "values")
def test_values_files_match_the_schema(values):
    defaults = yaml.safe_load(VALUES.read_text())
    jsonschema.validate(merged(defaults, yaml.safe_load(values.read_text()) or {}), SCHEMA)


def test_schema_rejects_a_misspelled_key():
    data = yaml.safe_load(VALUES.read_text())
    data["predictor"]["batching"]["maxBatchSise"] = data["predictor"]["batching"].pop("maxBatchSize")
    with pytest.raises(jsonschema.ValidationError, match="maxBatchSise"):
        jsonschema.validate(data, SCHEMA)
