"""The status table on the FastAPI app: one handler for each kind of error a request can raise.

Our ``ServingError``, kserve's errors (through ``kserve_compat``), FastAPI's body validation and
Starlette's ``HTTPException`` (unknown route 404, wrong method 405, a 500) all answer
``{"error", "error_type"}`` with the status the table gives (OpenAI's ``{"error": {"message", "type",
"code"}}`` on the OpenAI routes: ``errors.body_for``). A 500 names only the request id.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from starlette.requests import Request
from starlette.responses import Response

from snapserve.http import kserve_compat
from snapserve.errors import ServingError, body_for, error_type_for

log = logging.getLogger("snapserve")


class JSON(Response):
    """A JSON response rendered by orjson (FastAPI's ORJSONResponse is deprecated)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def response(exc: ServingError, path: str = "") -> JSON:
    """``exc``'s answer to a request for ``path`` (the path picks the body's shape)."""
    return JSON(body_for(path, exc.error_type, exc.reason), status_code=exc.status, headers=exc.headers())


def path_of(request: Request) -> str:
    return request.scope.get("path", "")


def request_id(request: Request) -> str:
    return request.headers.get("x-request-id") or uuid.uuid4().hex


async def serving_error(request: Request, exc: ServingError) -> JSON:
    return response(exc, path_of(request))


async def internal(request: Request, exc: Exception) -> JSON:
    rid = request_id(request)
    log.error("request %s failed", rid, exc_info=exc)
    return JSON(body_for(path_of(request), "internal", f"internal error; request id {rid}"), status_code=500)


def _reason(exc) -> str:
    return str(getattr(exc, "reason", exc))


async def validation(request: Request, exc) -> JSON:
    return response(ServingError("validation", _reason(exc)), path_of(request))


async def not_found(request: Request, exc) -> JSON:
    return response(ServingError("not_found", _reason(exc)), path_of(request))


async def unavailable(request: Request, exc) -> JSON:
    return response(ServingError("unavailable", _reason(exc), retry_after=1), path_of(request))


async def request_invalid(request: Request, exc) -> JSON:
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
    return response(ServingError("validation", f"invalid request body at {where}: {first.get('msg', 'invalid')}"),
                    path_of(request))


async def http_exception(request: Request, exc) -> JSON:
    """Starlette's HTTPException (routing's 404 and 405, a route's own raise) through the table."""
    kind = error_type_for(exc.status_code)
    if kind == "internal":
        return await internal(request, exc)
    headers = dict(getattr(exc, "headers", None) or {})
    status = ServingError(kind, "").status
    return JSON(body_for(path_of(request), kind, str(exc.detail)), status_code=status, headers=headers)


def install(app) -> None:
    """Register the handlers on kserve's FastAPI app, before the server starts."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    kserve_compat.replace_kserve_handlers({
        "validation": validation, "not_found": not_found, "unavailable": unavailable, "internal": internal,
    })
    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(HTTPException, http_exception)
    kserve_compat.guard_binary_decoding()
