"""A request-body limit as a pure ASGI middleware, shared by predictor and transformer.

A declared ``Content-Length`` over the limit is refused before a byte is read; a body without
one (chunked) is counted while it streams and refused as soon as it passes the limit. The body is
read here and handed on in one piece, so no route can see (or buffer) more than the limit. The
refused remainder is read and dropped up to ``DISCARD_BYTES`` so that clients which write their
whole body before reading the answer still get the 413 instead of a reset connection.
(Starlette's ``RequestBodyLimitMiddleware`` answers in plain text, outside the status table.)
"""

from __future__ import annotations

from snapserve.errors import STATUS, encoded_for

DISCARD_BYTES = 64 * 1024 * 1024


async def reject(send, error_type: str, reason: str, headers: list[tuple[bytes, bytes]] = (), path: str = "") -> None:
    """Answer an HTTP scope with an error from the shared status table, in the body shape of ``path``."""
    payload = encoded_for(path, error_type, reason)
    await send({"type": "http.response.start", "status": STATUS[error_type],
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


def header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class BodyLimit:
    """``app.add_middleware(BodyLimit, max_bytes=N)``: bodies over N bytes get 413."""

    def __init__(self, app, max_bytes: int):
        if max_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1 (got {max_bytes})")
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: int, exact: bool) -> str:
        return (f"request body is {'' if exact else 'over '}{size} bytes; the limit is {self.max_bytes} bytes "
                "(--max_body_bytes)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
                if length < 0:
                    raise ValueError
            except ValueError:
                return await reject(send, "validation", "Content-Length is not a number of bytes", path=scope["path"])
            if length > self.max_bytes:
                # a client that asked "Expect: 100-continue" waits for us and sends nothing more
                if length <= DISCARD_BYTES and header(scope, b"expect") is None:
                    await self._discard(receive)
                return await reject(send, "payload_too_large", self._too_large(length, True), path=scope["path"])
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                if message.get("more_body", False):
                    await self._discard(receive, size)
                return await reject(send, "payload_too_large", self._too_large(self.max_bytes, False),
                                    path=scope["path"])
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: disconnect notices
            replayed = True
            return {"type": "http.request", "body": whole, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def _discard(receive, seen: int = 0) -> None:
        while seen <= DISCARD_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
