"""Scale from zero, as the chart's KEDA ScaledObject does it with ``predictor.autoscaling.minReplicas: 0``:
poll Prometheus for the requests the transformers hold with no predictor answer yet (the same query
as the ScaledObject's ``held-requests`` trigger, with activationThreshold 0) and, once it is above 0,
start the predictors. The stack never scales back to zero (the chart's cooldownSeconds): a test or a
user measures one cold start per stack."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

log = logging.getLogger("snapserve.stack")
HELD_QUERY = 'sum(snapserve_requests_awaiting_predictor{component="transformer"})'


def query(prometheus_url: str, promql: str, timeout: float = 2.0) -> float | None:
    """The instant value of a one-series PromQL query; None when Prometheus has no answer (yet)."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            result = json.loads(r.read())["data"]["result"]
    except (OSError, ValueError, KeyError):
        return None
    return float(result[0]["value"][1]) if result else None


class Activator:
    """Polls every ``interval_s`` (KEDA's pollingInterval) until the held requests are above 0, then
    calls ``wake(held)`` once; ``activated_at`` is its time.time()."""

    def __init__(self, prometheus_url: str, interval_s: float, wake: Callable[[float], None]):
        self.prometheus_url, self.interval_s, self.wake = prometheus_url, interval_s, wake
        self.activated_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="activator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            held = query(self.prometheus_url, HELD_QUERY)
            if held is not None and held > 0:
                self.activated_at = time.time()
                log.info("activator: the transformers hold %g request(s) with no predictor; starting the predictors",
                         held)
                self.wake(held)
                return
