"""The one status table: every error a client can see takes its status and error_type from it."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from snapserve.http import handlers as http_errors
from snapserve.errors import STATUS, ServingError, error_type_for
from transformer.upstream import upstream_error


def test_every_status_maps_back_to_its_error_type():
    for kind, status in STATUS.items():
        assert STATUS[error_type_for(status)] == status, kind
    assert error_type_for(418) == "validation" and error_type_for(507) == "internal"
    with pytest.raises(ValueError, match="unknown error_type"):
        ServingError("oops", "x")


@pytest.fixture(scope="module")
def client():
    app = FastAPI()

    @app.get("/only-get")
    async def only_get():
        return {}

    @app.get("/boom")
    async def boom():
        raise HTTPException(500, "secret internals")

    @app.get("/teapot")
    async def teapot():
        raise HTTPException(418, "short and stout")

    http_errors.install(app)
    return TestClient(app, raise_server_exceptions=False)


def test_405_is_method_not_allowed_with_allow(client):
    r = client.post("/only-get")
    assert r.status_code == 405
    assert r.json()["error_type"] == "method_not_allowed"
    assert r.headers["allow"] == "GET"


def test_a_500_http_exception_is_internal_and_says_nothing_of_its_detail(client):
    r = client.get("/boom", headers={"x-request-id": "rid-1"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal error; request id rid-1", "error_type": "internal"}


def test_unknown_route_and_unlisted_4xx(client):
    assert client.get("/nope").json()["error_type"] == "not_found"
    r = client.get("/teapot")
    assert (r.status_code, r.json()["error_type"]) == (400, "validation")


@pytest.mark.parametrize(("status", "kind"), [(400, "validation"), (404, "not_found"), (413, "payload_too_large"),
                                              (422, "unprocessable"), (429, "overloaded"), (503, "unavailable"),
                                              (504, "timeout"), (500, "upstream"), (502, "upstream")])
def test_predictor_errors_keep_their_status_through_the_transformer(status, kind):
    response = httpx.Response(status, json={"error": "why", "error_type": error_type_for(status)},
                              headers={"retry-after": "3"})
    err = upstream_error(response)
    assert err.error_type == kind
    if status < 500 or kind != "upstream":
        assert err.status == status and err.reason == "why"
    if status in (429, 503):
        assert err.retry_after == 3.0


def test_a_predictor_answer_without_our_body_still_maps_by_status():
    err = upstream_error(httpx.Response(413, content=b"too big"))
    assert (err.status, err.error_type) == (413, "payload_too_large")
