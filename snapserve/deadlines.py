"""A request's deadline, from what the client (or the transformer, for the predictor) sends.

``x-request-timeout-ms: 1500`` (what the transformer forwards, minus the time already spent), or
``request-timeout`` as a duration (``1.5s``, ``1500ms``, or seconds), as Envoy and Gateway API
timeouts are written. Each server caps it with its own ``--request_timeout_ms``.
"""

from __future__ import annotations

import math

from snapserve.errors import ServingError


def requested_timeout(headers) -> float | None:
    """The client's timeout in seconds, None when it sent none, or a 400 for a malformed one."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    raw = headers.get("x-request-timeout-ms")
    scale = 1e-3
    if raw is None:
        raw, scale = headers.get("request-timeout"), 1.0
        if raw is not None and raw.strip().endswith("ms"):
            raw, scale = raw.strip()[:-2], 1e-3
        elif raw is not None and raw.strip().endswith("s"):
            raw = raw.strip()[:-1]
    if raw is None:
        return None
    try:
        value = float(raw) * scale
    except ValueError:
        raise ServingError("validation", f"request timeout {raw!r} is not a number") from None
    if not value > 0 or math.isinf(value):
        raise ServingError("validation", "a request timeout must be a positive number")
    return value


def capped(asked: float | None, cap_ms: float) -> float:
    """Seconds a request may take here: what its client asked for (None: nothing), capped by the server's."""
    cap = cap_ms / 1000
    return min(cap, asked or cap)


def timeout_for(headers, cap_ms: float) -> float:
    """Seconds this request may take here: the client's timeout, capped by the server's."""
    return capped(requested_timeout(headers), cap_ms)
