"""The transformer's way to the predictor: kserve's public inference clients (v2 REST with binary
tensors, or gRPC), and the predictor's errors as the transformer's clients should see them.

A predictor refusal keeps its status through the transformer (413 stays 413, 404 stays 404, 422
stays 422, 429/503 keep their Retry-After); only the predictor's own failures become 502.
"""

from __future__ import annotations

import asyncio

import httpx
from kserve import InferenceGRPCClient, InferenceRESTClient, InferRequest, InferResponse, RESTConfig

from snapserve import metrics
from snapserve.errors import STATUS, ServingError, error_type_for

FORWARDED = ("x-request-id", "traceparent", "tracestate")


class PredictorClient:
    def __init__(self, host: str, protocol: str, model_name: str, timeout_s: float, use_ssl: bool = False,
                 connect_timeout_s: float = 5.0):
        self.model_name = model_name
        self.protocol = protocol
        self.host, self.use_ssl = host, use_ssl
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.base_url = f"{'https' if use_ssl else 'http'}://{host}"
        self._grpc: InferenceGRPCClient | None = None
        self._rest: InferenceRESTClient | None = None

    @property
    def binary(self) -> bool:
        """Whether requests carry binary tensors (REST); gRPC has its own raw encoding."""
        return self.protocol != "grpc-v2"

    def _connect(self) -> None:
        """Made on the serving loop at first use: a gRPC aio channel belongs to the loop it was made on."""
        if self.protocol == "grpc-v2":
            self._grpc = InferenceGRPCClient(self.host, use_ssl=self.use_ssl, timeout=self.timeout_s, retries=2)
            return
        # kserve's RESTConfig builds a transport with its retries but never uses it: pass our own
        # (a retry covers a connection that a restarted predictor closed under us)
        transport = httpx.AsyncHTTPTransport(retries=1)
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s))
        self._rest = InferenceRESTClient(RESTConfig(transport=transport, protocol="v2", timeout=timeout))

    async def infer(self, request: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        """One v2 inference; predictor errors raised as ``ServingError`` from the status table."""
        forward = {k: v for k, v in (headers or {}).items() if k.lower() in FORWARDED}
        if self._grpc is None and self._rest is None:
            self._connect()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if self._grpc is not None:
                return await self._grpc.infer(request, headers=tuple(forward.items()))
            return await self._rest.infer(self.base_url, request, model_name=self.model_name, headers=forward)
        except httpx.HTTPStatusError as exc:
            raise upstream_error(exc.response) from None
        except (httpx.TransportError, OSError) as exc:
            raise ServingError("unavailable", f"predictor unreachable ({type(exc).__name__})", retry_after=1) from None
        except Exception as exc:
            grpc_error = grpc_status(exc)
            if grpc_error is None:
                raise
            raise grpc_error from None
        finally:
            metrics.PREDICTOR_CALL.observe(loop.time() - started)

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
