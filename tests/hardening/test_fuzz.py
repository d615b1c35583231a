"""Property-based fuzzing with schemathesis against both live servers: schema-conforming and
schema-violating requests from two OpenAPI documents — kserve's own /openapi.json (every route,
path and query parameters, the v2 body) and tests/hardening/openapi.yaml (the bodies of v1 :predict,
v2 /infer and the OpenAI route, which kserve's document leaves untyped). No answer may be >= 500,
and the servers must still serve afterwards."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

OURS = Path(__file__).with_name("openapi.yaml")
# cases per operation; SNAPSERVE_FUZZ_SCALE multiplies them for a longer hunt
SCALE = float(os.environ.get("SNAPSERVE_FUZZ_SCALE", "1"))
EXAMPLES = {"ours": int(300 * SCALE), "kserve": int(40 * SCALE)}
MIN_CASES = 2000
CASES: collections.Counter = collections.Counter()


def operations(schema):
    for result in schema.get_all_operations():
        yield result.ok()


def fuzz(schema, base_url: str, examples: int, label: str) -> None:
    session = requests.Session()
    for operation in operations(schema):
        strategy = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                             operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def one(case):
            response = case.call(base_url=base_url, session=session, timeout=60)
            CASES[label] += 1
            assert response.status_code < 500, (
                f"{case.operation.label} -> {response.status_code} {response.text[:300]}\n{case.as_curl_command()}")

        one()


@pytest.mark.parametrize("document", ["ours", "kserve"])
@pytest.mark.parametrize("server", ["transformer", "predictor"])
def test_fuzz_never_5xx(servers, server, document):
    base = servers.transformer_url if server == "transformer" else servers.predictor_url
    if document == "ours":
        schema = schemathesis.openapi.from_path(str(OURS))
    else:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    fuzz(schema, base, EXAMPLES[document], f"{server}/{document}")


def test_fuzzing_ran_enough_cases_and_the_servers_still_serve(servers):
    total = sum(CASES.values())
    print(f"\nfuzzing: {total} generated cases, 0 answers >= 500: {dict(CASES)}")
    if len(CASES) < 4:
        pytest.skip("the fuzzing tests did not all run in this session")
    assert total >= MIN_CASES * min(1.0, SCALE)
    for base in (servers.transformer_url, servers.predictor_url):
        r = httpx.post(f"{base}/v1/models/{servers.model_name}:predict", json={"instances": ["still serving"]},
                       timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"][0]) == 384
