"""The HTTP gate both servers put in front of kserve: request ids, drain state, closed routes.

``RequestGate`` (ASGI, outermost) gives every request an ``x-request-id`` (the client's, or a new
one) that the handlers, the logs and the answer carry; it counts inference requests by outcome,
times them and tracks how many are in flight. While the server drains (``DrainState``, set by
``snapserve.lifecycle``) readiness answers 503 and new inference requests get 503 + Retry-After,
so the load balancer retries them elsewhere. ``ClosedRoutes`` answers 404 for the kserve routes
snapserve does not serve. ``install`` puts these and the body limit on an app in their order.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid

from snapserve import metrics
from snapserve.bodylimit import BodyLimit, header, reject
from snapserve.errors import encoded

INFERENCE_PATHS = ("/infer", ":predict", "/embeddings")
READY_PATHS = ("/v2/health/ready", "/ready")
REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")  # printable, no spaces: safe in logs and headers


class DrainState:
    def __init__(self):
        self.draining = False
        self.in_flight = 0


STATE = DrainState()


def ensure_request_id(scope) -> bytes:
    """The request's ``x-request-id``: the client's when it is sane, else a new one put in the scope."""
    given = header(scope, b"x-request-id")
    if given is not None and REQUEST_ID.match(given):
        return given
    rid = uuid.uuid4().hex.encode()
    scope["headers"] = [(k, v) for k, v in scope.get("headers", ()) if k.lower() != b"x-request-id"]
    scope["headers"].append((b"x-request-id", rid))
    return rid


class RequestGate:
    def __init__(self, app, component: str, state: DrainState = STATE):
        self.app = app
        self.component = component
        self.state = state
        self.seconds = metrics.REQUEST_SECONDS.labels(component)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = ensure_request_id(scope)
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid)]}
            await send(message)

        path = scope["path"]
        if self.state.draining and path.endswith(READY_PATHS):
            return await refuse(send_with_id, "server is draining", count=None)
        if not path.endswith(INFERENCE_PATHS):
            return await self.app(scope, receive, send_with_id)
        if self.state.draining:
            return await refuse(send_with_id, "server is draining; retry on another replica", count=self.component)
        started = time.perf_counter()
        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.state.in_flight -= 1
            self.seconds.observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(self.component, metrics.outcome(status)).inc()


async def refuse(send, reason: str, count: str | None) -> None:
    """503 + Retry-After, closing the connection so the client's next try lands elsewhere."""
    payload = encoded("unavailable", reason)
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"connection", b"close"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
    if count:
        metrics.REQUESTS.labels(count, "rejected").inc()


class ClosedRoutes:
    """404 for kserve routes snapserve does not serve.

    kserve answers ``POST /v2/repository/models/<name>/unload`` without any check: one anonymous
    request would take the model out of service until the pod restarts (snapserve loads its one
    model at start and never needs the repository API). ``:explain`` and ``/versions/...`` only
    ever answer 501, which callers and alerts would read as a server fault.
    """

    CLOSED = re.compile(r"^/v2/repository(/|$)|:explain$|^/v2/models/[^/]+/versions(/|$)")

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (self.CLOSED.search(scope["path"]) or versioned(scope)):
            return await reject(send, "not_found", f"{scope['path']} is not served by snapserve "
                                "(no model repository API, explainer or model versions)")
        return await self.app(scope, receive, send)


def versioned(scope) -> bool:
    """A non-empty ``?model_version=``: kserve answers 501 to it on every route."""
    query = scope.get("query_string", b"")
    if b"model_version" not in query:
        return False
    values = urllib.parse.parse_qs(query.decode("latin-1"), keep_blank_values=True).get("model_version", [])
    return any(values)


def install(app, component: str, max_body_bytes: int, inner: tuple = ()) -> None:
    """From the outside in: RequestGate, ``inner`` middlewares (class, kwargs) in order (the
    transformer's guard), ClosedRoutes, BodyLimit, then kserve's app."""
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(ClosedRoutes)
    for cls, kwargs in reversed(inner):
        app.add_middleware(cls, **kwargs)
    app.add_middleware(RequestGate, component=component)
