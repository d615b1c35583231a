"""The one status table for every error a client can see, and the JSON body it gets.

Bodies are ``{"error": reason, "error_type": type}``; a 500 carries only a request id, the
traceback stays in the log. On the OpenAI routes (``openai_path``) they are OpenAI's (and vLLM's)
``{"error": {"message", "type", "param", "code"}}`` instead, so OpenAI clients can read them; the
status and ``Retry-After`` are the same. ``body_for`` picks the shape from the request's path. Everything that answers an error (our exceptions, kserve's, FastAPI's
and Starlette's, the ASGI middlewares, a predictor error relayed by the transformer) takes its
status and ``error_type`` from here. No web framework in this module.
"""

from __future__ import annotations


import os

import orjson

# error_type -> HTTP status
STATUS = {
    "validation": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "payload_too_large": 413,
    "unprocessable": 422,
    "overloaded": 429,
    "rate_limited": 429,
    "internal": 500,
    "upstream": 502,
    "unavailable": 503,
    "timeout": 504,
}
# error_type -> gRPC status code name (grpc.StatusCode.<name>), for the same errors over gRPC
GRPC_CODE = {
    "validation": "INVALID_ARGUMENT", "unauthorized": "UNAUTHENTICATED", "not_found": "NOT_FOUND",
    "method_not_allowed": "UNIMPLEMENTED", "request_timeout": "DEADLINE_EXCEEDED",
    "payload_too_large": "RESOURCE_EXHAUSTED", "unprocessable": "INVALID_ARGUMENT", "overloaded": "RESOURCE_EXHAUSTED",
    "rate_limited": "RESOURCE_EXHAUSTED", "internal": "INTERNAL", "upstream": "UNAVAILABLE", "unavailable": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
}
# HTTP status -> error_type, for statuses that arrive without one (a framework's HTTPException, a
# predictor answer relayed by the transformer); 429 reads as overload, the usual cause.
TYPE_OF_STATUS = {status: kind for kind, status in reversed(STATUS.items())}


def error_type_for(status: int) -> str:
    """The table's ``error_type`` for ``status``; an unlisted 4xx is a validation error, 5xx internal."""
    if status in TYPE_OF_STATUS:
        return TYPE_OF_STATUS[status]
    return "validation" if 400 <= status < 500 else "internal"


class ServingError(Exception):
    """An error with a client-facing reason; ``error_type`` picks the status from STATUS."""

    def __init__(self, error_type: str, reason: str, retry_after: float | None = None):
        if error_type not in STATUS:
            raise ValueError(f"unknown error_type {error_type!r}: add it to snapserve.errors.STATUS")
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return STATUS[self.error_type]

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(max(1, round(self.retry_after)))}


def body(error_type: str, reason: str) -> dict:
    return {"error": reason, "error_type": error_type}


def encoded(error_type: str, reason: str) -> bytes:
    return orjson.dumps(body(error_type, reason))


# vLLM's routes, which the field's OpenAI clients and the Gateway API Inference Extension assume, beside
# the prefixed ones; GET /v1/models is kserve's v1 route too, and keeps kserve's error shape.
OPENAI_ALIASES = ("/v1/chat/completions", "/v1/completions", "/health")


def openai_prefix() -> str:
    """Where the OpenAI routes live: kserve's ``KSERVE_OPENAI_ROUTE_PREFIX`` (default ``/openai``)."""
    value = os.environ.get("KSERVE_OPENAI_ROUTE_PREFIX", "/openai").rstrip("/")
    return value if not value or value.startswith("/") else f"/{value}"


def openai_path(path: str) -> bool:
    """Whether an error on ``path`` is answered in OpenAI's shape: under the OpenAI prefix (an unknown
    route there included), or one of vLLM's routes."""
    prefix = openai_prefix()
    return path in OPENAI_ALIASES or (bool(prefix) and path.startswith(f"{prefix}/"))


def openai_body(error_type: str, reason: str) -> dict:
    """OpenAI's error object, as vLLM fills it: our error_type as ``type``, the HTTP status as ``code``."""
    return {"error": {"message": reason, "type": error_type, "param": None, "code": STATUS[error_type]}}


def body_for(path: str, error_type: str, reason: str) -> dict:
    """The error body for a request to ``path``: OpenAI's shape on the OpenAI routes, else the table's."""
    return openai_body(error_type, reason) if openai_path(path) else body(error_type, reason)


def encoded_for(path: str, error_type: str, reason: str) -> bytes:
    return orjson.dumps(body_for(path, error_type, reason))


def reason_of(payload) -> str:
    """The reason an error body (either shape) gives, or ""."""
    error = payload.get("error", "") if isinstance(payload, dict) else ""
    return str(error.get("message", "")) if isinstance(error, dict) else str(error)


def json_object(raw: bytes | bytearray | str) -> dict:
    """Parse a request body that must be a JSON object (any content-type), or a clear 400."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ServingError("validation", f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ServingError("validation", "body must be a JSON object")
    return value
