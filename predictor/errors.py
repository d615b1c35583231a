"""One status table for every error a client can see, and the JSON shape it gets.

Bodies are ``{"error": reason, "error_type": type}``; a 500 carries only a request id, the
traceback stays in the log. Shared by predictor and transformer.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import uuid

from fastapi import Request
from fastapi.responses import ORJSONResponse

log = logging.getLogger("snapserve")

# error_type -> HTTP status
STATUS = {
    "validation": 400,
    "unauthorized": 401,
    "not_found": 404,
    "payload_too_large": 413,
    "unprocessable": 422,
    "overloaded": 429,
    "rate_limited": 429,
    "internal": 500,
    "upstream": 502,
    "unavailable": 503,
}


class ServingError(Exception):
    """An error with a client-facing reason; ``error_type`` picks the status from STATUS."""

    def __init__(self, error_type: str, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS[self.error_type]


@contextlib.contextmanager
def batcher_refusals():
    """A batcher's refusals as clients see them: queue full -> 429, draining -> 503."""
    from predictor.batching import Draining, QueueFull

    try:
        yield
    except QueueFull as exc:
        raise ServingError("overloaded", str(exc), retry_after=exc.retry_after) from None
    except Draining:
        raise ServingError("unavailable", "server is shutting down", retry_after=1) from None


def json_object(raw: bytes | bytearray | str) -> dict:
    """Parse a request body that must be a JSON object (any content-type), or a clear 400."""
    import orjson

    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ServingError("validation", f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ServingError("validation", "body must be a JSON object")
    return value


def body(error_type: str, reason: str) -> dict:
    return {"error": reason, "error_type": error_type}


def response(exc: ServingError) -> ORJSONResponse:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return ORJSONResponse(body(exc.error_type, exc.reason), status_code=exc.status, headers=headers)


async def serving_error_handler(_: Request, exc: ServingError) -> ORJSONResponse:
    return response(exc)


async def internal_error_handler(request: Request, exc: Exception) -> ORJSONResponse:
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    log.error("request %s failed", request_id, exc_info=exc)
    return ORJSONResponse(
        body("internal", f"internal error; request id {request_id}"),
        status_code=500,
        headers={"x-request-id": request_id},
    )


def install(app) -> None:
    """Register our handlers on kserve's FastAPI app, before the server starts.

    kserve registers its own handlers when the REST server starts, reading them from its
    ``server`` module; replacing those names there gives every kserve error our JSON shape
    and keeps exception names and messages of 500s out of bodies. FastAPI's own validation and
    HTTP errors (bodies that do not fit kserve's pydantic models, unknown routes) get it too.
    """
    from fastapi.exceptions import RequestValidationError
    from kserve.protocol.rest import server
    from starlette.exceptions import HTTPException

    async def invalid_input(_: Request, exc) -> ORJSONResponse:
        return response(ServingError("validation", str(getattr(exc, "reason", exc))))

    async def not_found(_: Request, exc) -> ORJSONResponse:
        return response(ServingError("not_found", str(exc)))

    async def not_ready(_: Request, exc) -> ORJSONResponse:
        return response(ServingError("unavailable", str(exc), retry_after=1))

    async def request_invalid(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return response(ServingError("validation", f"invalid request body at {where}: {first.get('msg', 'invalid')}"))

    async def http_error(_: Request, exc: HTTPException) -> ORJSONResponse:
        kind = {404: "not_found", 413: "payload_too_large", 503: "unavailable"}.get(exc.status_code, "validation")
        status = exc.status_code if exc.status_code < 500 or kind == "unavailable" else 500
        return ORJSONResponse(body(kind, str(exc.detail)), status_code=status, headers=getattr(exc, "headers", None))

    server.invalid_input_handler = invalid_input
    server.model_not_found_handler = not_found
    server.not_implemented_error_handler = not_found
    server.model_not_ready_handler = not_ready
    server.server_not_ready_handler = not_ready
    server.generic_exception_handler = internal_error_handler
    server.inference_error_handler = internal_error_handler
    app.add_exception_handler(ServingError, serving_error_handler)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(HTTPException, http_error)
    _guard_binary_decoding()


def _guard_binary_decoding() -> None:
    """kserve's binary-tensor decoding raises ValueError & co. on malformed bodies (a bad
    ``inference-header-content-length``, a buffer of the wrong size): those are the client's, 400."""
    from kserve.errors import InvalidInput
    from kserve.protocol import dataplane

    original = dataplane.DataPlane.decode_inference_request
    if getattr(original, "snapserve_guarded", False):
        return

    def decode_inference_request(self, body, headers, model_name):
        try:
            return original(self, body, headers, model_name)
        except InvalidInput:
            raise
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, struct.error) as exc:
            raise InvalidInput(f"malformed binary tensor request: {exc}") from None

    decode_inference_request.snapserve_guarded = True
    dataplane.DataPlane.decode_inference_request = decode_inference_request
