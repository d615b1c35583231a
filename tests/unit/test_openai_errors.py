"""Errors on the OpenAI routes in OpenAI's shape, every other route's in the status table's; and vLLM's
routes on a chat transformer (``/v1/chat/completions``, ``/v1/completions``, ``/health``, ``/v1/models``).

In-process: the chat router over a stub model, on a FastAPI app with our handlers and the gate, guard and
body limit in front, as the transformer puts them; no server, no predictor.
"""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from snapserve import errors
from snapserve.errors import STATUS, ServingError, body_for
from snapserve.http import gate, handlers as http_errors
from snapserve.http.streaming import sse_events
from transformer import guard
from transformer.routes import openai_chat

NAME = "smol"
CHAT = [{"role": "user", "content": "hi"}]
OPENAI_PATHS = ["/openai/v1/chat/completions", "/openai/v1/completions", "/openai/v1/embeddings",
                "/openai/v1/models", "/openai/v1/nope", "/v1/chat/completions", "/v1/completions", "/health"]
OTHER_PATHS = ["/v1/models", "/v1/models/smol:predict", "/v2/models/smol/infer", "/v2/health/ready", "/rerank",
               "/v1/rerank", "/tokenize", "/openai", "/openaiv1/chat/completions", "/v2/models/smol/generate_stream"]


def openai_shaped(payload: dict, error_type: str) -> str:
    """The message of an OpenAI-shaped error body (asserting its shape)."""
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == error_type and error["code"] == STATUS[error_type] and error["param"] is None
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


def test_the_path_picks_the_shape():
    for path in OPENAI_PATHS:
        assert errors.openai_path(path), path
        assert body_for(path, "not_found", "why") == {
            "error": {"message": "why", "type": "not_found", "param": None, "code": 404}}
    for path in OTHER_PATHS:
        assert not errors.openai_path(path), path
        assert body_for(path, "not_found", "why") == {"error": "why", "error_type": "not_found"} == \
            errors.body("not_found", "why")
    assert errors.reason_of(body_for("/health", "unavailable", "a")) == "a"
    assert errors.reason_of(body_for("/v2/health/ready", "unavailable", "b")) == "b"


def test_the_prefix_follows_kserve_s_setting(monkeypatch):
    monkeypatch.setenv("KSERVE_OPENAI_ROUTE_PREFIX", "llm/")
    assert errors.openai_prefix() == "/llm"
    assert errors.openai_path("/llm/v1/chat/completions") and not errors.openai_path("/openai/v1/chat/completions")
    assert errors.openai_path("/v1/chat/completions")  # vLLM's route whatever the prefix
    monkeypatch.setenv("KSERVE_OPENAI_ROUTE_PREFIX", "")
    assert not errors.openai_path("/v1/models/smol:predict") and not errors.openai_path("/v1/models")


# -- the chat routes over a stub model, behind the transformer's middlewares ------------------------

@dataclasses.dataclass
class Piece:
    text: str
    finish_reason: str | None
    completion_tokens: int


class StubChat:
    """What the chat routes use of a ``ChatModel``: two pieces, or a failure after the first."""

    def __init__(self):
        self.name, self.ready, self.fail_after_first = NAME, True, False

    def chat_prompt(self, messages):
        return [1, 2, 3]

    def text_prompt(self, text):
        return [1, 2]

    async def pieces(self, prompt, params, stops, headers):
        yield Piece("Hel", None, 1)
        if self.fail_after_first:
            raise ServingError("upstream", "the predictor went away")
        yield Piece("lo", "stop", 2)


def chat_app(model, door_check=None, ready_check=None, **settings) -> FastAPI:
    app = FastAPI()
    http_errors.install(app)
    app.add_exception_handler(Exception, http_errors.internal)  # kserve registers ours so when it starts
    app.include_router(openai_chat.router(model))

    @app.get("/v1/models/{name}:predict")  # a route of the status table's shape
    async def predict(name: str):
        raise ServingError("not_found", f"model {name!r} is not served here")

    @app.get("/openai/v1/boom")
    async def boom():
        raise RuntimeError("secret internals")

    guard.install(app, guard.GuardSettings(**settings), ready_check=ready_check, door_check=door_check)
    return app


@pytest.fixture
def model():
    return StubChat()


@pytest.fixture
def client(model):
    return TestClient(chat_app(model), raise_server_exceptions=False)


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/v1/chat/completions"])
def test_chat_on_both_routes(client, path):
    r = client.post(path, json={"model": NAME, "messages": CHAT})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello"
    r = client.post(path.replace("chat/completions", "completions"), json={"prompt": "x"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "Hello"


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/v1/chat/completions", "/v1/completions"])
def test_route_errors_are_openai_shaped(client, path):
    r = client.post(path, json={"model": "gpt-4", "messages": CHAT, "prompt": "x"})
    assert r.status_code == 404
    assert "'gpt-4' is not served here" in openai_shaped(r.json(), "not_found")
    r = client.post(path, json={"messages": CHAT, "prompt": "x", "n": 2})
    assert r.status_code == 400 and "'n' must be 1" in openai_shaped(r.json(), "validation")
    r = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in openai_shaped(r.json(), "validation")
    r = client.get(path)  # routing's 405
    assert r.status_code == 405 and openai_shaped(r.json(), "method_not_allowed")


def test_framework_errors_on_openai_paths(client):
    r = client.get("/openai/v1/nope")  # routing's 404 under the prefix
    assert r.status_code == 404 and openai_shaped(r.json(), "not_found")
    r = client.get("/openai/v1/boom", headers={"x-request-id": "rid-7"})
    assert r.status_code == 500
    assert openai_shaped(r.json(), "internal") == "internal error; request id rid-7"


def test_other_routes_keep_the_status_table_body(client):
    r = client.get("/v1/models/other:predict")
    assert r.status_code == 404 and r.json() == {"error": "model 'other' is not served here", "error_type": "not_found"}
    r = client.get("/nope")
    assert r.status_code == 404 and set(r.json()) == {"error", "error_type"}
    r = client.post("/v1/models")  # kserve's v1 list: its shape, not OpenAI's
    assert r.status_code == 405 and r.json()["error_type"] == "method_not_allowed"
    r = client.post("/v2/repository/models/smol/unload")  # closed routes
    assert r.status_code == 404 and r.json()["error_type"] == "not_found"


def test_refusals_before_the_route_are_openai_shaped(model, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("good-key\n")
    app = chat_app(model, api_keys_file=str(keys), rate_limit_rps=1, rate_limit_burst=1, max_body_bytes=100)
    client = TestClient(app, raise_server_exceptions=False)
    bad = {"authorization": "Bearer nope"}
    r = client.post("/v1/chat/completions", json={"messages": CHAT}, headers=bad)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "API key" in openai_shaped(r.json(), "unauthorized")
    r = client.post("/v1/models/smol:predict", json={}, headers=bad)
    assert r.status_code == 401 and set(r.json()) == {"error", "error_type"}
    good = {"authorization": "Bearer good-key"}
    r = client.post("/openai/v1/chat/completions", content=b"x" * 101, headers=good)  # body limit, first token
    assert r.status_code == 413 and "--max_body_bytes" in openai_shaped(r.json(), "payload_too_large")
    r = client.post("/openai/v1/chat/completions", json={"messages": CHAT}, headers=good)  # rate limit
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "rate limit" in openai_shaped(r.json(), "rate_limited")
    assert client.get("/health").status_code == 200  # a probe: no key, no rate limit


def test_the_door_check_refusal_is_openai_shaped(model):
    def door(headers):
        raise ServingError("overloaded", "the queue is full; retry later", retry_after=2)

    client = TestClient(chat_app(model, door_check=door), raise_server_exceptions=False)
    for path in ("/v1/chat/completions", "/openai/v1/completions"):
        r = client.post(path, json={"messages": CHAT, "prompt": "x"})
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert openai_shaped(r.json(), "overloaded") == "the queue is full; retry later"


def test_draining_refusals_are_openai_shaped_on_openai_paths_only(client, monkeypatch):
    monkeypatch.setattr(gate.STATE, "draining", True)
    r = client.post("/v1/chat/completions", json={"messages": CHAT})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "draining" in openai_shaped(r.json(), "unavailable")
    r = client.get("/health")
    assert r.status_code == 503 and openai_shaped(r.json(), "unavailable") == "server is draining"
    r = client.get("/v2/health/ready")
    assert r.status_code == 503 and r.json() == {"error": "server is draining", "error_type": "unavailable"}


def test_health_follows_readiness(model):
    reason = {"now": "no predictor answered in 30 s"}

    async def ready_check():
        return reason["now"]

    client = TestClient(chat_app(model, ready_check=ready_check), raise_server_exceptions=False)
    r = client.get("/health")
    assert r.status_code == 503 and "no predictor answered" in openai_shaped(r.json(), "unavailable")
    reason["now"] = None
    r = client.get("/health")
    assert (r.status_code, r.content) == (200, b"")
    model.ready = False  # stopping: the model is unloaded
    assert client.get("/health").status_code == 503


def test_v1_models_serves_kserve_and_openai_clients(client):
    both = client.get("/v1/models").json()
    assert both["models"] == [NAME]  # kserve's v1 list
    assert both["object"] == "list" and [m["id"] for m in both["data"]] == [NAME]  # OpenAI's
    prefixed = client.get("/openai/v1/models").json()
    assert "models" not in prefixed and prefixed["data"] == both["data"]


def test_the_vllm_aliases_are_inference_routes(client):
    for path in ("/v1/chat/completions", "/v1/completions", "/openai/v1/chat/completions"):
        assert gate.ROUTES.matches({"path": path}), path
    assert not gate.ROUTES.matches({"path": "/v1/models"}) and not gate.ROUTES.matches({"path": "/health"})


def test_an_error_inside_a_stream_is_openai_shaped(client, model):
    model.fail_after_first = True
    for path in ("/openai/v1/chat/completions", "/v1/completions"):
        r = client.post(path, json={"messages": CHAT, "prompt": "x", "stream": True})
        assert r.status_code == 200
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert openai_shaped(orjson.loads(events[-2]), "upstream") == "the predictor went away"


def test_the_sse_writer_keeps_the_table_s_shape_off_the_openai_routes():
    async def failing():
        yield {"token": 1}
        raise ServingError("timeout", "too slow")

    async def collect(path):
        return [event async for event in sse_events(failing(), "rid", path=path)]

    plain = asyncio.run(collect("/v2/models/smol/generate_stream"))
    assert plain[-1] == b'data: {"error":"too slow","error_type":"timeout"}\n\n'
    shaped = asyncio.run(collect("/v1/chat/completions"))
    assert orjson.loads(shaped[-1][6:]) == {"error": {"message": "too slow", "type": "timeout", "param": None,
                                                      "code": 504}}
