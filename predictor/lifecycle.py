"""Request gate and drain, shared by predictor and transformer.

``RequestGate`` (ASGI) counts inference requests by outcome, times them and tracks how many are
in flight. On the first SIGTERM/SIGINT the server drains: readiness answers 503, new inference
requests get 503 + Retry-After (the load balancer retries them elsewhere), requests in flight
and work the model accepted finish, then kserve's servers stop and the process exits 0 — all
within the grace period. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from predictor import errors, metrics

log = logging.getLogger("snapserve")
INFERENCE_PATHS = ("/infer", ":predict", "/embeddings")
READY_PATHS = ("/v2/health/ready", "/ready")


def configure_logging() -> None:
    """Send snapserve's own INFO lines (settings, warm-up, drain) to kserve's handlers."""
    from kserve.logging import logger as kserve_logger

    ours = logging.getLogger("snapserve")
    ours.setLevel(logging.INFO)
    if kserve_logger.handlers:
        ours.handlers = list(kserve_logger.handlers)
        ours.propagate = False


class DrainState:
    def __init__(self):
        self.draining = False
        self.in_flight = 0


STATE = DrainState()


class RequestGate:
    def __init__(self, app, component: str, state: DrainState = STATE):
        self.app = app
        self.component = component
        self.state = state
        self.seconds = metrics.REQUEST_SECONDS.labels(component)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.state.draining and path.endswith(READY_PATHS):
            return await refuse(send, "server is draining", count=None)
        if not path.endswith(INFERENCE_PATHS):
            return await self.app(scope, receive, send)
        if self.state.draining:
            return await refuse(send, "server is draining; retry on another replica", count=self.component)
        started = time.perf_counter()
        status = 500
        self.state.in_flight += 1

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.state.in_flight -= 1
            self.seconds.observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(self.component, metrics.outcome(status)).inc()


async def refuse(send, reason: str, count: str | None) -> None:
    body = orjson.dumps(errors.body("unavailable", reason))
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"), (b"connection", b"close"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
    if count:
        metrics.REQUESTS.labels(count, "rejected").inc()


def run(server, model, grace_period: float, state: DrainState = STATE) -> None:
    """``server.start([model])`` with a drain before uvicorn's own graceful stop."""
    import uvicorn

    original = uvicorn.Server.handle_exit
    loop_holder: dict = {}

    def handle_exit(self, sig, frame):
        loop = loop_holder.get("loop")
        if state.draining or loop is None:
            return original(self, sig, frame)
        state.draining = True
        log.info("signal %s: draining (not ready; finishing %d in-flight requests)", sig, state.in_flight)
        loop.call_soon_threadsafe(lambda: loop.create_task(drain(self, sig)))

    async def drain(uvicorn_server, sig):
        deadline = time.monotonic() + grace_period
        model.ready = False
        while state.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        finish = getattr(model, "drain", None)
        if finish is not None:
            try:
                await asyncio.wait_for(finish(), max(0.1, deadline - time.monotonic()))
            except Exception:  # stopping regardless
                log.exception("drain did not finish cleanly")
        log.info("drained; stopping")
        uvicorn_server.should_exit = True
        server.stop(sig)

    async def remember_loop():
        loop_holder["loop"] = asyncio.get_running_loop()

    uvicorn.Server.handle_exit = handle_exit
    server.servers.append(remember_loop())
    server.start([model])
