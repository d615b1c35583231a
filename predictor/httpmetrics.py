"""ASGI middleware: counts inference requests by outcome and times them (both servers)."""

from __future__ import annotations

import time

from predictor import metrics

INFERENCE_PATHS = ("/infer", ":predict", "/embeddings")


class RequestMetrics:
    def __init__(self, app, component: str):
        self.app = app
        self.component = component
        self.seconds = metrics.REQUEST_SECONDS.labels(component)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith(INFERENCE_PATHS):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.seconds.observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(self.component, metrics.outcome(status)).inc()
