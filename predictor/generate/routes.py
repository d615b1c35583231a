"""The KServe/Triton generate extension on the predictor's app: ``POST /v2/models/{name}/generate``
(one JSON answer) and ``/generate_stream`` (server-sent events, ``data: {...}`` per step).

A client that goes away cancels its request in the engine at once: Starlette cancels a streaming
response when the client disconnects; a plain ``/generate`` races the generation against the
disconnect message.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from snapserve.http import gate
from snapserve.errors import ServingError, body, json_object

log = logging.getLogger("snapserve.predictor")


def sse(event: dict) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
        model.engine.admit()  # a full engine answers 429 before any stream starts
        return job

    async def generate(name: str, request: Request) -> Response:
        job = await job_of(name, request)
        work = asyncio.ensure_future(model.complete(job))
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()  # the client left: cancels the request in the engine
        if work.cancelled():
            return Response(status_code=499)
        return Response(orjson.dumps(work.result()), media_type="application/json")

    async def generate_stream(name: str, request: Request) -> Response:
        job = await job_of(name, request)

        async def events():
            try:
                async for event in model.stream(job):
                    yield sse(event)
            except ServingError as exc:  # after the 200 went out, an error is the stream's last event
                yield sse(body(exc.error_type, exc.reason))
            except Exception:  # the traceback stays in the log, the client gets a request id
                log.exception("generation %s failed", job.request_id)
                yield sse(body("internal", f"internal error; request id {job.request_id}"))

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    api.add_api_route("/v2/models/{name}/generate", generate, methods=["POST"])
    api.add_api_route("/v2/models/{name}/generate_stream", generate_stream, methods=["POST"])
    return api
