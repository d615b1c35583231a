"""Start and drain a kserve ModelServer: shared by predictor and transformer.

On SIGTERM/SIGINT the model turns not-ready at once (readiness probes answer 503), queued
and running work finishes, then kserve's servers stop within the grace period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal

log = logging.getLogger("snapserve")


def describe(settings) -> dict:
    from predictor.flags import redact

    values = {k: str(v) for k, v in dataclasses.asdict(settings).items()}
    return redact(values)


def run(server, model) -> None:
    """``server.start([model])`` with a drain step before kserve's own shutdown."""
    original_stop = server.stop

    def stop(sig: int) -> None:
        async def drain_then_stop():
            log.info("signal %s: draining (ready=false, finishing in-flight work)", sig)
            drain = getattr(model, "drain", None)
            if drain is not None:
                try:
                    await drain()
                except Exception:  # shutting down regardless
                    log.exception("drain failed")
            original_stop(sig)

        asyncio.get_event_loop().create_task(drain_then_stop())

    server.stop = stop
    server.register_signal_handler = lambda: _register(server)
    server.start([model])


def _register(server) -> None:
    loop = asyncio.get_event_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        loop.add_signal_handler(sig, server.stop, sig)
