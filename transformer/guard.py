"""The transformer's front door: optional API keys, a per-caller rate limit, a body limit.

A pure ASGI middleware, so it works behind any ingress (or none). Keys come from a file, one per
line (``--api_keys_file``; a mounted Kubernetes Secret works the same and is re-read when it
changes); callers send ``Authorization: Bearer <key>``. A key's line may go on with its share of the
queue, ``weight=2`` (default 1), and a cap on its queued sequences, ``max_queued=500`` (default
``--max_queue_sequences_per_key``): each key is a tenant of the fair queues (``snapserve.tenants``). Keys are compared in constant time and
never logged: logs name a key by the first 8 hex digits of its SHA-256. The token-bucket rate limit
is per key, or per client address when keys are off (the TCP peer: behind an ingress that is the
ingress, unless uvicorn is told to trust its X-Forwarded-For — use keys for per-caller limits there).
``--max_concurrent_requests`` sheds at the door with 429 once that many requests are in progress,
before their bodies are read. kserve's model-repository API (unload!),
``:explain`` and model versions are closed (404). Probes and scrapes (health, readiness, model
status, ``/``, ``/metrics``) stay open and unlimited so the cluster can always see the pod.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import logging
import math
import os
import re
import time
from pathlib import Path

from snapserve import tenants
from snapserve.settings import MAX_BODY_BYTES, from_attrs, same_as, setting

from snapserve.http import gate
from snapserve.http.bodylimit import header, reject
from snapserve.errors import ServingError

log = logging.getLogger("snapserve.guard")

OPEN_PATHS = re.compile(r"^/$|^/health$|^/metrics/?$|^/v2/health/(live|ready)$|^/v2/models/[^/]+/ready$")
OPEN_GET = re.compile(r"^/v1/models/[^/:]+$")
RELOAD_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class GuardSettings:
    api_keys_file: str = setting("", "file with one API key per line; empty: no keys asked (a mounted Secret works)")
    rate_limit_rps: float = setting(0.0, "requests per second per key (per client address without keys); 0: no "
                                    "limit", chart="transformer.rateLimit.rps")
    rate_limit_burst: int = setting(0, "requests a caller may send at once above the rate (0: one second's worth)",
                                    chart="transformer.rateLimit.burst")
    max_body_bytes: int = same_as("max_body_bytes", MAX_BODY_BYTES["transformer"])  # a flag both servers have
    max_concurrent_requests: int = setting(0, "requests in this process at once; more get 429 at the door, before "
                                           "their body is read (0: no limit)",
                                           chart="transformer.limits.maxConcurrentRequests")

    def __post_init__(self):
        if self.max_concurrent_requests < 0:
            raise ValueError("--max_concurrent_requests must be >= 0 (0 turns the limit off)")
        if self.rate_limit_rps < 0 or self.rate_limit_burst < 0:
            raise ValueError("--rate_limit_rps and --rate_limit_burst must be >= 0 (0 turns the limit off)")
        if self.max_body_bytes < 1:
            raise ValueError(f"--max_body_bytes must be at least 1 (got {self.max_body_bytes})")
        if self.api_keys_file:
            KeyRing(self.api_keys_file)  # a missing or empty file fails at start, not at the first request

    @property
    def burst(self) -> int:
        """Bucket size: the flag, or one second's worth of requests when it is 0."""
        return self.rate_limit_burst or max(1, math.ceil(self.rate_limit_rps))


def settings_from(args) -> GuardSettings:
    """GuardSettings from parsed arguments (or any object carrying the same names; missing: the defaults)."""
    return from_attrs(GuardSettings, args)


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class KeyRing:
    """The keys of one file, re-read when the file changes (checked at most every few seconds)."""

    def __init__(self, path: str):
        self.path = Path(path)
        self._stamp = None
        self._checked = 0.0
        self._digests: list[tuple[str, bytes]] = []
        self.options: dict[str, dict] = {}  # key id -> its line's weight= / max_queued=
        self._load(initial=True)

    def _load(self, initial: bool = False) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            if stamp == self._stamp:
                return
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            if initial:
                raise ValueError(f"--api_keys_file {self.path}: cannot read it ({exc.__class__.__name__})") from None
            log.warning("api keys file %s unreadable; keeping the %d keys loaded", self.path, len(self._digests))
            return
        entries = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        try:
            options = {key_id(words[0]): tenants.options(words[1:]) for words in entries}
        except ValueError as exc:
            if initial:
                raise ValueError(f"--api_keys_file {self.path}: {exc}") from None
            log.warning("api keys file %s: %s; keeping the %d keys loaded", self.path, exc, len(self._digests))
            return
        keys = [words[0] for words in entries]
        if not keys:
            if initial:
                raise ValueError(f"--api_keys_file {self.path} holds no keys (one per line); "
                                 "leave the flag empty to run without keys")
            log.warning("api keys file %s is empty now; keeping the %d keys loaded", self.path, len(self._digests))
            return
        self._digests = [(key_id(k), hashlib.sha256(k.encode()).digest()) for k in keys]
        self.options = options
        self._stamp = stamp
        log.info("api keys: %d loaded from %s (ids %s)", len(keys), self.path,
                 ", ".join(kid for kid, _ in self._digests))

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_SECONDS:
            self._checked = now
            self._load()

    def match(self, presented: str) -> str | None:
        """The id of the key ``presented`` is, or None; every key is compared, in constant time."""
        self.refresh()
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for kid, known in self._digests:
            if hmac.compare_digest(known, digest):
                found = kid
        return found


class TokenBuckets:
    """One token bucket per caller; idle callers are forgotten beyond ``max_callers``."""

    def __init__(self, rate: float, burst: int, max_callers: int = 10_000):
        self.rate, self.burst, self.max_callers = rate, burst, max_callers
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, caller: str, now: float | None = None) -> float | None:
        """Spend one token: None when allowed, else seconds until a token is there."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(caller, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[caller] = (tokens, now)
        while len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.rate


def is_open(method: str, path: str) -> bool:
    return bool(OPEN_PATHS.match(path)) or (method in ("GET", "HEAD") and bool(OPEN_GET.match(path)))


class Guard:
    """``app.add_middleware(Guard, keys=KeyRing|None, buckets=TokenBuckets|None, max_concurrent=0,
    door_check=None)``. ``door_check(headers)`` (a dict of the request's headers, the tenant's included)
    raises a ServingError when an inference request would be refused anyway: it is answered here, before
    its body is read and parsed (under overload most requests are refused, and each costs the event loop
    that also serves the accepted ones)."""

    def __init__(self, app, keys: KeyRing | None = None, buckets: TokenBuckets | None = None,
                 max_concurrent: int = 0, door_check=None):
        self.app, self.keys, self.buckets, self.max_concurrent = app, keys, buckets, max_concurrent
        self.door_check = door_check
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if any(k.startswith(b"x-snapserve-tenant") for k, _ in scope.get("headers", ())):
            # only the guard names tenants (from the API key); a client's own claim is dropped
            scope["headers"] = [(k, v) for k, v in scope["headers"] if not k.startswith(b"x-snapserve-tenant")]
        path = scope["path"]
        if is_open(scope["method"], path):
            return await self.app(scope, receive, send)
        caller = (scope.get("client") or ("unknown",))[0]
        if self.keys is not None:
            kid = self.keys.match(bearer(scope))
            if kid is None:
                return await reject(send, "unauthorized", "missing or invalid API key: send "
                                    "'Authorization: Bearer <key>'", [(b"www-authenticate", b"Bearer")], path)
            caller = f"key:{kid}"
            scope.setdefault("state", {})["api_key_id"] = kid
            tenant = tenants.Tenant(kid, **self.keys.options.get(kid, {}))
            scope["headers"] = [*scope.get("headers", ()), *((k.encode(), v.encode()) for k, v in tenant.headers().items())]
        if self.buckets is not None:
            wait = self.buckets.take(caller)
            if wait is not None:
                retry = str(max(1, math.ceil(wait))).encode()
                return await reject(send, "rate_limited", f"rate limit of {self.buckets.rate:g} requests/s "
                                    f"(burst {self.buckets.burst}) reached; retry later", [(b"retry-after", retry)],
                                    path)
        if self.max_concurrent and self.in_flight >= self.max_concurrent:
            # shed at the door: past this, requests would only wait on this process's CPU
            return await reject(send, "overloaded", f"{self.in_flight} requests in progress (limit "
                                f"{self.max_concurrent}); retry later", [(b"retry-after", b"1")], path)
        if self.door_check is not None and gate.ROUTES.matches(scope):
            refusal = self.refusal(scope)
            if refusal is not None:
                return await reject(send, refusal.error_type, refusal.reason,
                                    [(k.lower().encode(), v.encode()) for k, v in refusal.headers().items()], path)
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


    def refusal(self, scope) -> ServingError | None:
        """The door check's 429/503, or None (a malformed header is left for the app's own 400)."""
        try:
            self.door_check({k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())})
        except ServingError as exc:
            return exc if exc.error_type in ("overloaded", "unavailable") else None
        return None


def bearer(scope) -> str:
    value = (header(scope, b"authorization") or b"").decode("latin-1").strip()
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def install(app, args, log_access: bool = False, log_probes: bool = False, ready_check=None,
            drop_abandoned: bool = True, door_check=None) -> GuardSettings:
    """Put the HTTP gate and, when configured, keys, rate limit and door shedding on kserve's app.

    ``args``: GuardSettings, parsed arguments, or settings carrying the flag names. Order from the
    outside in: request gate, guard (callers are checked first), closed routes, body limit.
    """
    settings = args if isinstance(args, GuardSettings) else settings_from(args)
    keys = KeyRing(settings.api_keys_file) if settings.api_keys_file else None
    buckets = TokenBuckets(settings.rate_limit_rps, settings.burst) if settings.rate_limit_rps > 0 else None
    # always in place: without keys or limits it only drops a client's x-snapserve-tenant headers
    inner = ((Guard, {"keys": keys, "buckets": buckets, "max_concurrent": settings.max_concurrent_requests,
                      "door_check": door_check}),)
    gate.install(app, "transformer", settings.max_body_bytes, inner, log_access, log_probes, ready_check,
                 drop_abandoned)
    log.info("guard: api keys %s; rate limit %s; max body %d bytes; max concurrent requests %s",
             "on" if keys else "off",
             f"{settings.rate_limit_rps:g}/s burst {settings.burst} per {'key' if keys else 'client address'}"
             if buckets else "off", settings.max_body_bytes, settings.max_concurrent_requests or "unlimited")
    return settings
