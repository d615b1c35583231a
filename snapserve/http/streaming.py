"""The one cancel-on-disconnect and the one server-sent-events writer, for every inference route of
both servers (the gate applies the first to each route declared with ``gate.inference_route``).

Cancel: a client that hangs up before its answer is complete cancels the route's task, so its queued
sequences leave the batcher, or its generation leaves the engine (the generator's ``finally``), or
the transformer's upstream stream is closed (which the predictor sees as a hang-up in turn).

SSE: ``data: {...}\\n\\n`` per event; an error after the 200 went out is the stream's last event,
``{"error", "error_type"}`` from the status table, or OpenAI's ``{"error": {"message", "type", "code"}}``
on the OpenAI routes (``errors.body_for``; a traceback stays in the log); an OpenAI stream ends with
``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson

from snapserve.errors import ServingError, body_for

log = logging.getLogger("snapserve.http")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}  # no proxy buffering (nginx)
DONE = b"[DONE]"


def sse(value) -> bytes:
    """One event: a dict as JSON, or raw bytes (``[DONE]``)."""
    return b"data: " + (value if isinstance(value, bytes) else orjson.dumps(value)) + b"\n\n"


async def sse_events(events: AsyncIterator, request_id: str = "", done: bool = False,
                     path: str = "") -> AsyncIterator[bytes]:
    """``events`` (dicts) as SSE bytes; an error after the stream started becomes its last event (in the
    error shape of the request's ``path``), and ``events`` is always closed (closing it is what cancels the
    work behind it)."""
    try:
        async for event in events:
            yield sse(event)
    except ServingError as exc:
        yield sse(body_for(path, exc.error_type, exc.reason))
    except Exception:  # the traceback stays in the log, the client gets a request id
        log.exception("stream %s failed", request_id or "-")
        yield sse(body_for(path, "internal", f"internal error; request id {request_id or '-'}"))
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
    if done:
        yield sse(DONE)


def sse_response(events: AsyncIterator, request_id: str = "", done: bool = False, path: str = ""):
    from fastapi.responses import StreamingResponse

    return StreamingResponse(sse_events(events, request_id, done, path), media_type="text/event-stream",
                             headers=SSE_HEADERS)


async def cancel_on_disconnect(app, scope, receive, send, status: dict) -> str | None:
    """Run ``app`` and cancel it when the client hangs up before its answer is complete. Returns
    "cancelled" when that happened. The client's disconnect is watched only once the body has been
    read, so the app still gets every body message itself."""
    body_read = asyncio.Event()

    async def receive_body():
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_read.set()
        return message

    async def watch(task: asyncio.Task) -> bool:
        await body_read.wait()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not status["done"] and not task.done():
                    task.cancel()
                    return True
                return False

    task = asyncio.ensure_future(app(scope, receive_body, send))
    watcher = asyncio.ensure_future(watch(task))
    try:
        await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled() and watcher.result():
            return "cancelled"  # nobody to answer
        raise
    finally:
        watcher.cancel()
    return None
