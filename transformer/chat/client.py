"""The transformer's way to a generating predictor: its ``/generate_stream`` (KServe generate
extension, server-sent events) over one pooled httpx client.

Closing the stream (the client went away, or a stop string was met) closes the HTTP response
before it ended, which the predictor sees as a disconnect and cancels the request in its engine.
A refusal before the stream starts keeps its status (``transformer.upstream.upstream_error``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson

from snapserve.errors import STATUS, ServingError
from transformer.upstream import FORWARDED, upstream_error


class GenerateClient:
    def __init__(self, host: str, model_name: str, timeout_s: float, use_ssl: bool = False):
        scheme = "https" if use_ssl else "http"
        self.path = f"/v2/models/{model_name}/generate_stream"
        self.http = httpx.AsyncClient(
            base_url=f"{scheme}://{host}", timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    async def stream(self, prompt: list[int], parameters: dict, headers: dict | None = None) -> AsyncIterator[dict]:
        """The predictor's events for one request, in order; the last has ``finish_reason``."""
        forward = {k: v for k, v in (headers or {}).items() if k.lower() in FORWARDED}
        body = {"input_ids": prompt, "parameters": parameters}
        if "x-request-id" in forward:
            body["id"] = forward["x-request-id"]
        try:
            async with self.http.stream("POST", self.path, content=orjson.dumps(body), headers={
                    **forward, "content-type": "application/json", "accept": "text/event-stream"}) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise upstream_error(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = orjson.loads(line[5:])
                    if "error" in event:
                        kind = event.get("error_type")
                        raise ServingError(kind if kind in STATUS and kind != "internal" else "upstream",
                                           str(event["error"]))
                    yield event
        except httpx.TimeoutException:
            raise ServingError("timeout", "the predictor did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ServingError("upstream", f"predictor unreachable: {type(exc).__name__}") from None

    async def close(self) -> None:
        await self.http.aclose()
