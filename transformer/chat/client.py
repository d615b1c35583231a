"""The transformer's way to a generating predictor: its ``/generate_stream`` (KServe generate
extension, server-sent events) over one pooled httpx client, through the same ``Upstream`` as the
tensor client (deadline, retry while no predictor answers, readiness).

A stream is retried while it has given no event yet: a refused connection, a 503 from a draining or
restarting predictor, or an ``unavailable`` error event before the first token. Once a token has
come, a failure ends the stream with an error (the route makes it the stream's last event).
Closing the stream (the client went away, or a stop string was met) closes the HTTP response
before it ended, which the predictor sees as a disconnect and cancels the request in its engine.
A refusal before the stream starts keeps its status (``transformer.upstream.upstream_error``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson

from snapserve.errors import STATUS, ServingError
from transformer.upstream import PROBE_TIMEOUT_S, Upstream, transport_error, upstream_error


def error_event(event: dict) -> ServingError:
    kind = event.get("error_type")
    return ServingError(kind if kind in STATUS and kind != "internal" else "upstream", str(event["error"]),
                        retry_after=1 if kind in ("overloaded", "unavailable") else None)


async def sse_events(response: httpx.Response):
    """The stream's events in order; an error event is raised as the ServingError it names."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            event = orjson.loads(line[5:])
            if "error" in event:
                raise error_event(event)
            yield event


class GenerateClient:
    def __init__(self, host: str, model_name: str, timeout_s: float, use_ssl: bool = False,
                 connect_timeout_s: float = 3.0):
        self.path = f"/v2/models/{model_name}/generate_stream"
        self.upstream = Upstream(host, use_ssl, timeout_s, connect_timeout_s, self._probe)
        # between two events a stream may wait as long as kserve's --predictor_request_timeout_seconds
        self.http = httpx.AsyncClient(
            base_url=self.upstream.base_url, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    async def stream(self, prompt: list[int], parameters: dict, headers: dict | None = None,
                     deadline: float | None = None) -> AsyncIterator[dict]:
        """The predictor's events for one request, in order; the last has ``finish_reason``. The
        first event must come within ``deadline`` (``time.monotonic()``), retries included."""
        body = {"input_ids": prompt, "parameters": parameters}
        rid = {k.lower(): v for k, v in (headers or {}).items()}.get("x-request-id")
        if rid:
            body["id"] = rid
        content = orjson.dumps(body)
        response, events, first = await self.upstream.retrying(
            lambda forward, timeout: self._open(content, forward, timeout), headers, deadline)
        try:
            yield first
            if first.get("finish_reason"):
                return
            async for event in events:
                yield event
        except httpx.HTTPError as exc:
            error = transport_error(exc)
            raise ServingError("upstream" if error.error_type == "unavailable" else error.error_type,
                               f"the predictor's stream broke: {error.reason}") from None
        finally:
            await response.aclose()

    async def _open(self, content: bytes, forward: dict, timeout: float):
        """One try: the response, its events and its first event (an error event before any
        token is the request's refusal, retried when it is ``unavailable``)."""
        request = self.http.build_request(
            "POST", self.path, content=content, timeout=httpx.Timeout(timeout, connect=min(timeout, self.upstream.connect_timeout_s)),
            headers={**forward, "content-type": "application/json", "accept": "text/event-stream"})
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None
        try:
            if response.status_code != 200:
                await response.aread()
                raise upstream_error(response)
            events = sse_events(response)
            first = await anext(events, None)
            if first is None:
                raise ServingError("unavailable", "the predictor closed the stream before its first event",
                                   retry_after=1)
            return response, events, first
        except httpx.HTTPError as exc:
            await response.aclose()
            raise transport_error(exc) from None
        except BaseException:
            await response.aclose()
            raise

    async def unready_reason(self, unready_after_s: float) -> str | None:
        return await self.upstream.unready_reason(unready_after_s)

    async def _probe(self) -> bool:
        response = await self.http.get("/v2/health/ready", timeout=PROBE_TIMEOUT_S)
        return response.status_code == 200

    async def close(self) -> None:
        await self.http.aclose()
