"""Start and stop: our log lines through kserve's handlers, and a drain before uvicorn's stop.

On the first SIGTERM/SIGINT the server drains: the gate's ``DrainState`` turns readiness to 503
and refuses new inference requests, requests in flight and work the model accepted finish, then
kserve's servers stop and the process exits 0, all within the grace period. A second signal
stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from snapserve.http import kserve_compat
from snapserve.http.gate import STATE, DrainState

log = logging.getLogger("snapserve")


def configure_logging(settings=None) -> None:
    """Send snapserve's own INFO lines (settings, warm-up, drain, access) to kserve's handlers, and
    quieten what would log per request: uvicorn's access log (the gate writes ours, without probes),
    kserve's trace lines unless ``settings.trace_logging``, and progress bars. Call it after
    ``kserve.ModelServer(...)``, which configures logging once (uvicorn does not again)."""
    from kserve.logging import logger as kserve_logger

    ours = logging.getLogger("snapserve")
    ours.setLevel(logging.INFO)
    if kserve_logger.handlers:
        ours.handlers = list(kserve_logger.handlers)
        ours.propagate = False
    logging.getLogger("uvicorn.access").disabled = True
    if not getattr(settings, "trace_logging", False):
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)


def run(server, model, grace_period: float, state: DrainState = STATE) -> None:
    """``server.start([model])`` with a drain before uvicorn's own graceful stop."""
    loop_holder: dict = {}

    def first_signal(uvicorn_server, sig) -> bool:
        loop = loop_holder.get("loop")
        if state.draining or loop is None:
            return False  # a second signal, or before serving: uvicorn stops at once
        state.draining = True
        log.info("signal %s: draining (not ready; finishing %d in-flight requests)", sig, state.in_flight)
        loop.call_soon_threadsafe(lambda: loop.create_task(drain(uvicorn_server, sig)))
        return True

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

    kserve_compat.intercept_exit(first_signal)
    kserve_compat.run_beside(server, kserve_compat.remember_loop(loop_holder))
    server.start([model])
