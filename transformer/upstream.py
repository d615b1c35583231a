"""The transformer's way to the predictor, for both products: the deadline, the retry with back-off
while no predictor answers, readiness that follows the predictor (``Upstream``); kserve's public
inference clients for tensors (``PredictorClient``; the generate stream's client is
``transformer.chat.client``); and the predictor's errors as the transformer's clients should see them.

A predictor refusal keeps its status through the transformer (413 stays 413, 404 stays 404, 422
stays 422, 429/503 keep their Retry-After); only the predictor's own failures become 502.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from kserve import InferenceGRPCClient, InferenceRESTClient, InferRequest, InferResponse, RESTConfig

from snapserve import metrics, tenants
from snapserve.errors import STATUS, ServingError, error_type_for

FORWARDED = ("x-request-id", "traceparent", "tracestate", *tenants.HEADERS)
BACKOFF_S, MAX_BACKOFF_S = 0.05, 1.0  # retries while no predictor is reachable
PROBE_AFTER_S, PROBE_TIMEOUT_S = 2.0, 1.0
log = logging.getLogger("snapserve.transformer")


class Upstream:
    """One predictor as both clients (tensors and generate streams) see it: the request's deadline,
    a retry with back-off while no predictor answers, and readiness that follows the predictor.

    ``retrying(attempt, headers, deadline)`` runs ``attempt(forward_headers, timeout_s)`` until it
    answers; while no predictor is reachable (connection refused or reset, 503 while one drains or
    restarts) the call is held and retried with back-off until ``deadline`` (``time.monotonic()``), so a
    restart that fits in the caller's deadline shows as latency, not as an error. Each try forwards
    what is left of the deadline (``x-request-timeout-ms``) and gets it as its timeout."""

    def __init__(self, host: str, use_ssl: bool, timeout_s: float, connect_timeout_s: float, probe):
        self.host, self.use_ssl = host, use_ssl
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.base_url = f"{'https' if use_ssl else 'http'}://{host}"
        self._probe = probe  # async () -> bool: the predictor answers its readiness probe
        self.last_ok = self.last_probe = 0.0  # time.monotonic() of the last answer / readiness probe
        self.down_since: float | None = None  # first failure since the last answer

    def answered(self) -> None:
        self.last_ok, self.down_since = time.monotonic(), None

    async def retrying(self, attempt, headers: dict[str, str] | None, deadline: float | None):
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout_s
        forward = {k: v for k, v in (headers or {}).items() if k.lower() in FORWARDED}
        backoff = BACKOFF_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServingError("timeout", "no predictor answered within the request's deadline")
            forward["x-request-timeout-ms"] = str(max(1, int(left * 1000)))
            try:
                answer = await attempt(forward, min(left, self.timeout_s))
                self.answered()
                return answer
            except ServingError as exc:
                if exc.error_type != "unavailable":
                    raise
                self.down_since = self.down_since or time.monotonic()
                if deadline - time.monotonic() <= backoff:
                    raise
                log.debug("predictor unavailable (%s); retrying in %.2f s", exc.reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def unready_reason(self, unready_after_s: float) -> str | None:
        """Why the transformer should not be Ready, or None. Not Ready once no predictor has answered
        for ``unready_after_s`` (one blip does not turn the tier unready); with no recent call, a quick
        probe of the predictor's readiness stands in for traffic."""
        now = time.monotonic()
        if now - self.last_ok > PROBE_AFTER_S and (self.down_since is None or now - self.last_probe > PROBE_AFTER_S):
            self.last_probe = now
            try:
                ok = bool(await self._probe())
            except Exception:  # noqa: BLE001 - any failure to answer is "not reachable"
                ok = False
            if ok:
                self.answered()
            else:
                self.down_since = self.down_since or now
        if self.down_since is not None and time.monotonic() - self.down_since >= unready_after_s:
            return f"no predictor answered for {time.monotonic() - self.down_since:.0f} s ({self.host})"
        return None


def transport_error(exc: Exception) -> ServingError:
    """An httpx failure to reach the predictor or to hear from it, as the client should see it."""
    if isinstance(exc, httpx.ConnectTimeout):
        return ServingError("unavailable", "predictor unreachable (connect timeout)", retry_after=1)
    if isinstance(exc, httpx.TimeoutException):
        return ServingError("timeout", "the predictor did not answer within the request's deadline")
    return ServingError("unavailable", f"predictor unreachable ({type(exc).__name__})", retry_after=1)


class PredictorClient:
    """v2 inference (binary tensors on REST, or gRPC) through kserve's public clients."""

    def __init__(self, host: str, protocol: str, model_name: str, timeout_s: float, use_ssl: bool = False,
                 connect_timeout_s: float = 5.0):
        self.model_name = model_name
        self.protocol = protocol
        self.upstream = Upstream(host, use_ssl, timeout_s, connect_timeout_s, self._probe)
        self._grpc: InferenceGRPCClient | None = None
        self._rest: InferenceRESTClient | None = None

    @property
    def binary(self) -> bool:
        """Whether requests carry binary tensors (REST); gRPC has its own raw encoding."""
        return self.protocol != "grpc-v2"

    def _connect(self) -> None:
        """Made on the serving loop at first use: a gRPC aio channel belongs to the loop it was made on."""
        if self.protocol == "grpc-v2":
            self._grpc = InferenceGRPCClient(self.upstream.host, use_ssl=self.upstream.use_ssl, timeout=self.upstream.timeout_s, retries=2)
            return
        # kserve's RESTConfig builds a transport with its retries but never uses it: pass our own
        # (a retry covers a connection that a restarted predictor closed under us)
        transport = httpx.AsyncHTTPTransport(retries=1)
        timeout = httpx.Timeout(self.upstream.timeout_s, connect=min(self.upstream.connect_timeout_s, self.upstream.timeout_s))
        self._rest = InferenceRESTClient(RESTConfig(transport=transport, protocol="v2", timeout=timeout))

    async def infer(self, request: InferRequest, headers: dict[str, str] | None = None,
                    deadline: float | None = None) -> InferResponse:
        """One v2 inference within ``deadline``, predictor errors raised as ``ServingError``."""
        return await self.upstream.retrying(lambda forward, timeout: self._try(request, forward, timeout),
                                            headers, deadline)

    async def _try(self, request: InferRequest, forward: dict[str, str], timeout: float) -> InferResponse:
        if self._grpc is None and self._rest is None:
            self._connect()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if self._grpc is not None:
                return await self._grpc.infer(request, timeout=timeout, headers=tuple(forward.items()))
            return await self._rest.infer(self.upstream.base_url, request, model_name=self.model_name, headers=forward,
                                          timeout=httpx.Timeout(timeout, connect=min(self.upstream.connect_timeout_s, timeout)))
        except httpx.HTTPStatusError as exc:
            raise upstream_error(exc.response) from None
        except (httpx.TransportError, OSError) as exc:
            raise transport_error(exc) from None
        except Exception as exc:
            grpc_error = grpc_status(exc)
            if grpc_error is None:
                raise
            raise grpc_error from None
        finally:
            metrics.PREDICTOR_CALL.observe(loop.time() - started)

    async def unready_reason(self, unready_after_s: float) -> str | None:
        return await self.upstream.unready_reason(unready_after_s)

    async def _probe(self) -> bool:
        if self._grpc is None and self._rest is None:
            self._connect()
        if self._grpc is not None:
            return bool(await self._grpc.is_server_ready(timeout=PROBE_TIMEOUT_S))
        return bool(await self._rest.is_server_ready(self.upstream.base_url, timeout=PROBE_TIMEOUT_S))

    async def close(self) -> None:
        if self._grpc is not None:
            await self._grpc.close()
        if self._rest is not None:
            await self._rest.close()
        self._grpc = self._rest = None


def upstream_error(response: httpx.Response) -> ServingError:
    """A predictor error answer as the client should see it: the predictor's status and reason."""
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    answer = answer if isinstance(answer, dict) else {}
    status = response.status_code
    kind = answer.get("error_type")
    if kind not in STATUS or STATUS[kind] != status:
        kind = error_type_for(status)
    if status >= 500 and kind not in ("unavailable", "timeout"):
        return ServingError("upstream", f"predictor failed with status {status}")
    reason = str(answer.get("error") or "rejected by the predictor")
    retry = None
    if status in (429, 503):
        try:
            retry = float(response.headers.get("retry-after", 1))
        except ValueError:
            retry = 1.0
    return ServingError(kind, reason, retry_after=retry)


def grpc_status(exc: Exception) -> ServingError | None:
    try:
        import grpc
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, grpc.aio.AioRpcError):
        return None
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ServingError("overloaded", details or "predictor busy", retry_after=1)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServingError("unavailable", "predictor unavailable", retry_after=1)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServingError("timeout", "the predictor did not answer in time")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ServingError("validation", details or "rejected by the predictor")
    if code == grpc.StatusCode.NOT_FOUND:
        return ServingError("not_found", details or "not found on the predictor")
    return ServingError("upstream", f"predictor failed ({code.name})")
