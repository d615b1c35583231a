"""The HTTP gate both servers put in front of kserve: request ids, drain state, closed routes.

``RequestGate`` (ASGI, outermost) gives every request an ``x-request-id`` (the client's, or a new
one) that the handlers, the logs and the answer carry; it counts inference requests by outcome,
times them and tracks how many are in flight. While the server drains (``DrainState``, set by
``snapserve.http.lifecycle``) readiness answers 503 and new inference requests get 503 + Retry-After,
so the load balancer retries them elsewhere. ``ClosedRoutes`` answers 404 for the kserve routes
snapserve does not serve. ``install`` puts these and the body limit on an app in their order.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
import uuid

import orjson

from snapserve import metrics
from snapserve.http.bodylimit import BodyLimit, header, reject
from snapserve.errors import encoded_for, reason_of as error_reason
from snapserve.http.streaming import cancel_on_disconnect

access = logging.getLogger("snapserve.access")
errors_log = logging.getLogger("snapserve.errors")
# Inference routes are counted, timed, refused while draining and cancelled when their client hangs up.
# A route is one by declaration: ours are added with ``inference_route``; kserve's own are named here.
KSERVE_INFERENCE_ROUTES = ("/v1/models/{model_name}:predict", "/v2/models/{model_name}/infer")
PROBES = re.compile(r"^/$|^/health$|^/metrics/?$|^/v2/?$|^/v2/health/(live|ready)$|^/v2/models/[^/]+(/ready)?$|^/v1/models/[^/:]+$")
READY_PATHS = ("/v2/health/ready", "/ready")
# exact paths answered as readiness too, declared by the app that serves them (``readiness_route``)
READY_ALIASES: set[str] = set()
REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")  # printable, no spaces: safe in logs and headers


class InferenceRoutes:
    """The declared inference routes' path templates, matched as Starlette matches them."""

    def __init__(self, templates=KSERVE_INFERENCE_ROUTES):
        self.templates: list[str] = []
        self._regexes: list[re.Pattern] = []
        for template in templates:
            self.declare(template)

    def declare(self, template: str) -> None:
        from starlette.routing import compile_path

        if template not in self.templates:
            self.templates.append(template)
            self._regexes.append(compile_path(template)[0])

    def matches(self, scope) -> bool:
        path = scope["path"]
        return any(regex.match(path) for regex in self._regexes)


ROUTES = InferenceRoutes()


def inference_route(api, path: str, endpoint, methods=("POST",)) -> None:
    """Add an inference route to ``api`` (a FastAPI router): the gate's drain, cancel-on-disconnect and
    request metrics, and the transformer's door check, apply to it."""
    ROUTES.declare(path)
    api.add_api_route(path, endpoint, methods=list(methods))


def readiness_route(api, path: str, ready=lambda: True) -> None:
    """Add ``GET path`` to ``api``: 503 (as the readiness paths) while draining or while the server's
    ready check fails, else 200 with an empty body when ``ready()`` (the model loaded), 503 otherwise.
    vLLM's ``/health``, which the Gateway API Inference Extension and benchmark clients probe."""
    from starlette.responses import Response

    from snapserve.errors import ServingError

    READY_ALIASES.add(path)

    async def health() -> Response:
        if not ready():
            raise ServingError("unavailable", "not ready: the model is not loaded", retry_after=1)
        return Response(status_code=200)

    api.add_api_route(path, health, methods=["GET"])


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


class ErrorLog:
    """One WARNING line per 5xx answer, with its request id and reason, at most ``burst`` lines per
    ``window_s`` (a dead predictor under load must not flood the log); the rest are counted and the
    count is reported on the next line that gets through."""

    def __init__(self, burst: int = 10, window_s: float = 10.0):
        self.burst, self.window_s = burst, window_s
        self._window_start, self._in_window, self.suppressed = 0.0, 0, 0

    def record(self, component: str, rid: str, method: str, path: str, status: int, reason: str) -> bool:
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            return False
        self._in_window += 1
        more = f" ({self.suppressed} more 5xx not logged)" if self.suppressed else ""
        self.suppressed = 0
        errors_log.warning("%s answered %d to %s %s (request %s): %s%s", component, status, method, path, rid,
                           reason, more)
        return True


class RequestGate:
    def __init__(self, app, component: str, state: DrainState = STATE, log_access: bool = False,
                 log_probes: bool = False, error_log: ErrorLog | None = None, ready_check=None,
                 drop_abandoned: bool = True):
        self.app = app
        self.drop_abandoned = drop_abandoned
        self.ready_check = ready_check  # async () -> reason not to be Ready, or None
        self.component = component
        self.state = state
        self.log_access, self.log_probes = log_access, log_probes
        self.error_log = error_log or ErrorLog()
        self.seconds = metrics.REQUEST_SECONDS.labels(component)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = ensure_request_id(scope)
        started = time.perf_counter()
        status, error_body = 500, b""

        async def send_with_id(message):
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid)]}
            elif status >= 500 and len(error_body) < 512:
                error_body += message.get("body", b"")[:512]
            await send(message)

        try:
            await self._gated(scope, receive, send_with_id)
        finally:
            self._log(scope, rid.decode(), status, error_body, time.perf_counter() - started)

    async def _gated(self, scope, receive, send) -> None:
        path = scope["path"]
        if path.endswith(READY_PATHS) or path in READY_ALIASES:
            if self.state.draining:
                return await refuse(send, "server is draining", count=None, path=path)
            reason = await self.ready_check() if self.ready_check is not None else None
            if reason:
                return await refuse(send, f"not ready: {reason}", count=None, close=False, path=path)
        if not ROUTES.matches(scope):
            return await self.app(scope, receive, send)
        if self.state.draining:
            return await refuse(send, "server is draining; retry on another replica", count=self.component, path=path)
        started = time.perf_counter()
        status = {"code": 500, "done": False}

        async def track(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                status["done"] = True
            await send(message)

        self.state.in_flight += 1
        outcome = None
        try:
            if self.drop_abandoned:
                outcome = await cancel_on_disconnect(self.app, scope, receive, track, status)
            else:
                await self.app(scope, receive, track)
        finally:
            self.state.in_flight -= 1
            self.seconds.observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(self.component, outcome or metrics.outcome(status["code"])).inc()

    def _log(self, scope, rid: str, status: int, error_body: bytes, seconds: float) -> None:
        method, path = scope.get("method", ""), scope["path"]
        # a 500 was logged with its traceback by the handler that made it
        if status > 500:
            self.error_log.record(self.component, rid, method, path, status, reason_of(error_body))
        if self.log_access and (self.log_probes or not PROBES.match(path)):
            client = (scope.get("client") or ("-",))[0]
            access.info('%s "%s %s" %d %.1f ms id=%s', client, method, path, status, seconds * 1e3, rid)


def reason_of(body: bytes) -> str:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    if not isinstance(payload, dict):
        return body[:200].decode("utf-8", "replace")
    return error_reason(payload)[:200]


async def refuse(send, reason: str, count: str | None, close: bool = True, path: str = "") -> None:
    """503 + Retry-After, closing the connection (draining) so the client's next try lands elsewhere."""
    payload = encoded_for(path, "unavailable", reason)
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"1"),
               (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 503,
                "headers": [*headers, (b"connection", b"close")] if close else headers})
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
                                "(no model repository API, explainer or model versions)", path=scope["path"])
        return await self.app(scope, receive, send)


def versioned(scope) -> bool:
    """A non-empty ``?model_version=``: kserve answers 501 to it on every route."""
    query = scope.get("query_string", b"")
    if b"model_version" not in query:
        return False
    values = urllib.parse.parse_qs(query.decode("latin-1"), keep_blank_values=True).get("model_version", [])
    return any(values)


def install(app, component: str, max_body_bytes: int, inner: tuple = (), log_access: bool = False,
            log_probes: bool = False, ready_check=None, drop_abandoned: bool = True) -> None:
    """From the outside in: RequestGate, ``inner`` middlewares (class, kwargs) in order (the
    transformer's guard), ClosedRoutes, BodyLimit, then kserve's app."""
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(ClosedRoutes)
    for cls, kwargs in reversed(inner):
        app.add_middleware(cls, **kwargs)
    app.add_middleware(RequestGate, component=component, log_access=log_access, log_probes=log_probes,
                       ready_check=ready_check, drop_abandoned=drop_abandoned)
