"""The gate's log rules: which paths are probes, and the rate limit on 5xx lines."""

from __future__ import annotations

import logging

import pytest

from snapserve.http import gate
from snapserve.deadlines import requested_timeout
from snapserve.errors import ServingError


@pytest.mark.parametrize("path", ["/", "/metrics", "/v2/health/ready", "/v2/health/live", "/v2/models/snap/ready",
                                  "/v2/models/snap", "/v1/models/snap"])
def test_probes_and_scrapes_are_not_access_logged(path):
    assert gate.PROBES.match(path)


@pytest.mark.parametrize("path", ["/v1/models/snap:predict", "/v2/models/snap/infer", "/openai/v1/embeddings"])
def test_inference_paths_are_access_logged(path):
    assert not gate.PROBES.match(path)


def test_5xx_lines_are_rate_limited_and_the_rest_counted(caplog):
    errors = gate.ErrorLog(burst=2, window_s=3600)
    with caplog.at_level(logging.WARNING, logger="snapserve.errors"):
        logged = [errors.record("transformer", f"r{i}", "POST", "/x", 503, "down") for i in range(5)]
    assert logged == [True, True, False, False, False]
    assert errors.suppressed == 3
    errors._window_start = -1e9  # the next window
    with caplog.at_level(logging.WARNING, logger="snapserve.errors"):
        assert errors.record("transformer", "r9", "POST", "/x", 503, "down")
    assert "(3 more 5xx not logged)" in caplog.records[-1].getMessage()
    assert "request r0" in caplog.records[0].getMessage()


@pytest.mark.parametrize(("headers", "seconds"), [({}, None), ({"x-request-timeout-ms": "1500"}, 1.5),
                                                   ({"request-timeout": "2s"}, 2.0),
                                                   ({"request-timeout": "250ms"}, 0.25),
                                                   ({"request-timeout": "3"}, 3.0)])
def test_a_client_deadline_from_its_headers(headers, seconds):
    assert requested_timeout(headers) == seconds


@pytest.mark.parametrize("value", ["soon", "-5", "0", "inf"])
def test_a_bad_client_deadline_is_a_400(value):
    with pytest.raises(ServingError) as err:
        requested_timeout({"x-request-timeout-ms": value})
    assert err.value.status == 400
