"""The KServe/Triton generate extension on the predictor's app: ``POST /v2/models/{name}/generate``
(one JSON answer) and ``/generate_stream`` (server-sent events, ``data: {...}`` per step).

Both are declared inference routes (``gate.inference_route``), so the gate cancels a request whose client went away
(``snapserve.http.streaming.cancel_on_disconnect``): the engine's generator is closed, which frees
its KV blocks at the next step. A request's deadline (``x-request-timeout-ms``, what the transformer
forwards) bounds its admission and its wait for the first token.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapserve.errors import ServingError, json_object
from snapserve.http import gate
from snapserve.http.streaming import sse_response


def router(model) -> APIRouter:
    """Routes bound to one ``GenerateModel``."""
    api = APIRouter()

    async def job_of(name: str, request: Request):
        if name != model.name:
            raise ServingError("not_found", f"model {name!r} is not served here; use {model.name!r}")
        if gate.STATE.draining or not model.ready:
            raise ServingError("unavailable", "server is not ready or draining; retry on another replica",
                               retry_after=1)
        job = model.parse(json_object(await request.body()), dict(request.headers))
        model.admit(job)  # a full engine, or a spent deadline, answers before any stream starts
        return job

    async def generate(name: str, request: Request) -> Response:
        job = await job_of(name, request)
        return Response(orjson.dumps(await model.complete(job)), media_type="application/json")

    async def generate_stream(name: str, request: Request) -> Response:
        job = await job_of(name, request)
        return sse_response(model.stream(job), job.request_id)

    gate.inference_route(api, "/v2/models/{name}/generate", generate)
    gate.inference_route(api, "/v2/models/{name}/generate_stream", generate_stream)
    return api
