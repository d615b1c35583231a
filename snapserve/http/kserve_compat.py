"""Every place snapserve reaches into kserve, uvicorn or FastAPI internals, in one module.

Each patch names the internal it relies on; ``tests/unit/test_kserve_compat.py`` has one test per
patch that fails when that internal changes. Importing this module on another kserve than the one
it was written for fails at once with a clear message, rather than serving with a patch that
silently no longer applies.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import struct
import threading
from collections.abc import Callable, Coroutine
from typing import Any

WRITTEN_FOR = "0.21."


def check_version(found: str | None = None) -> None:
    found = found or importlib.metadata.version("kserve")
    if not found.startswith(WRITTEN_FOR):
        raise RuntimeError(
            f"snapserve.http.kserve_compat was written for kserve {WRITTEN_FOR}x and this is kserve {found}: "
            "pin kserve==0.21.0 (pyproject.toml) or re-check each patch in snapserve/http/kserve_compat.py "
            "with tests/unit/test_kserve_compat.py")


check_version()


# -- 0. kserve's own deprecated FastAPI API ----------------------------------------------------
def quiet_kserve_deprecations() -> None:
    """kserve 0.21 answers with FastAPI's ORJSONResponse, deprecated since FastAPI 0.131; kserve also
    needs starlette>=1.3.1, which no FastAPI before 0.131 accepts, so no pin avoids the warning that
    every start would print. Only that one warning is silenced; snapserve's own code does not use it."""
    import warnings

    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated", module=r"fastapi\..*")
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated", module=r"kserve\..*")


quiet_kserve_deprecations()


# -- 1. kserve's module-global argument parser ------------------------------------------------
def kserve_parser() -> argparse.ArgumentParser:
    """kserve's own parser, to extend with ``parents=`` (importing kserve.model_server parses argv
    once with ``parse_known_args``, harmlessly)."""
    from kserve import model_server

    return model_server.parser


# -- 2. kserve's exception handlers -----------------------------------------------------------
KSERVE_HANDLERS = {
    # name in kserve.protocol.rest.server -> the key of ours that replaces it
    "invalid_input_handler": "validation",
    "model_not_found_handler": "not_found",
    "not_implemented_error_handler": "not_found",
    "model_not_ready_handler": "unavailable",
    "server_not_ready_handler": "unavailable",
    "server_not_live_handler": "unavailable",
    "unsupported_protocol_error_handler": "validation",
    "generic_exception_handler": "internal",
    "inference_error_handler": "internal",
}


def replace_kserve_handlers(handlers: dict[str, Callable]) -> None:
    """kserve's REST server registers its exception handlers when it starts (after our code ran),
    reading them from names in its ``server`` module; rebinding those names is the only way to
    give kserve's errors our body shape and status table. ``handlers`` maps our keys to handlers."""
    from kserve.protocol.rest import server

    for name, key in KSERVE_HANDLERS.items():
        setattr(server, name, handlers[key])


# -- 3. kserve's binary-tensor decoding -------------------------------------------------------
INFERENCE_HEADER = "inference-header-content-length"


def has_header_length(headers) -> bool:
    return any(str(k).lower() == INFERENCE_HEADER for k in headers)


def guard_binary_decoding() -> None:
    """kserve's binary-tensor decoding raises ValueError & co. on malformed bodies (a bad
    ``inference-header-content-length``, a buffer of the wrong size): those are the client's, 400.
    A v2 body that arrives as bytes without that header is read as JSON (3b, below)."""
    from kserve.errors import InvalidInput
    from kserve.protocol import dataplane

    original = dataplane.DataPlane.decode_inference_request
    if getattr(original, "snapserve_guarded", False):
        return

    def decode_inference_request(self, body, headers, model_name):
        if isinstance(body, (bytes, bytearray)) and headers is not None and not has_header_length(headers):
            # 3b. Triton reads a body without Inference-Header-Content-Length as all JSON (tritonclient
            # sends JSON-only requests so, with no content type); kserve refuses it. The JSON part then
            # spans the whole body.
            headers = {**headers, INFERENCE_HEADER: str(len(body))}
        try:
            return original(self, body, headers, model_name)
        except InvalidInput:
            raise
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, struct.error) as exc:
            raise InvalidInput(f"malformed binary tensor request: {exc}") from None

    decode_inference_request.snapserve_guarded = True
    dataplane.DataPlane.decode_inference_request = decode_inference_request


# -- 4. uvicorn's signal handling -------------------------------------------------------------
def intercept_exit(first_signal: Callable[[Any, int], bool]) -> None:
    """Call ``first_signal(uvicorn_server, sig)`` before uvicorn's own stop on SIGTERM/SIGINT; when it
    returns True the signal is taken (a drain runs) and uvicorn's handler is not called. uvicorn
    has no hook for this, and kserve builds its uvicorn servers itself, so the class method is
    replaced."""
    import uvicorn

    original = getattr(uvicorn.Server.handle_exit, "snapserve_original", uvicorn.Server.handle_exit)

    def handle_exit(self, sig, frame):
        if first_signal(self, sig):
            return None
        return original(self, sig, frame)

    handle_exit.snapserve_original = original
    uvicorn.Server.handle_exit = handle_exit


# -- 5. a coroutine of ours on kserve's event loop --------------------------------------------
def run_beside(server, coroutine: Coroutine) -> None:
    """Run ``coroutine`` on the loop kserve's ``ModelServer.start`` creates: kserve gathers
    ``server.servers`` there and has no public hook for a task of ours."""
    server.servers.append(coroutine)


async def remember_loop(holder: dict) -> None:
    holder["loop"] = asyncio.get_running_loop()


# -- 6. the platform in v2 model metadata -----------------------------------------------------
def report_model_platform() -> None:
    """kserve's ``DataPlane.model_metadata`` (REST and gRPC) answers ``platform: ""`` for every model;
    answer the model's own ``platform`` attribute instead (its inputs and outputs already come from
    the public ``get_input_types`` / ``get_output_types`` hooks)."""
    from kserve.protocol import dataplane

    original = dataplane.DataPlane.model_metadata
    if getattr(original, "snapserve_platform", False):
        return

    async def model_metadata(self, model_name: str):
        answer = await original(self, model_name)
        platform = getattr(self.get_model_from_registry(model_name), "platform", "")
        if isinstance(platform, str) and platform:
            answer["platform"] = platform
        return answer

    model_metadata.snapserve_platform = True
    dataplane.DataPlane.model_metadata = model_metadata


# -- 7. raw (binary) tensor contents of a gRPC input ------------------------------------------
def has_raw_data(tensor) -> bool:
    """Whether a kserve ``InferInput`` holds its values as raw bytes (gRPC ``raw_input_contents``,
    which Triton's clients send) rather than in ``data``: kserve exposes no public accessor."""
    return getattr(tensor, "_raw_data", None) is not None


# -- 8. a read timeout for slow clients (slowloris) -------------------------------------------

def limit_client_reads(timeout_s: float, on_close: Callable[[], None] = lambda: None) -> None:
    """Close a connection whose request (headers and body) has not fully arrived ``timeout_s`` after
    it could start (the connection opened, or its first byte after an answer), answering 408 when no
    answer has begun. uvicorn arms only a keep-alive timer, after an answer: a client that connects
    and sends nothing, or trickles its headers or body, holds its connection (and, once its headers
    are in, its request's slot) for ever. Both uvicorn HTTP protocols are patched (kserve lets
    uvicorn pick: httptools when installed, else h11); ``on_close`` counts each closed connection.
    ``timeout_s`` 0: no limit."""
    from uvicorn.protocols.http import h11_impl, httptools_impl

    from snapserve.errors import encoded

    body = encoded("request_timeout", f"the request did not arrive within {timeout_s:g} s (--client_timeout_s)")
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
              b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def expire(proto) -> None:
        proto.snapserve_read_timer = None
        transport = proto.transport
        if transport is None or transport.is_closing():
            return
        cycle = proto.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            transport.write(answer)
        transport.close()
        on_close()

    def arm(proto) -> None:
        if timeout_s > 0 and getattr(proto, "snapserve_read_timer", None) is None:
            proto.snapserve_read_timer = proto.loop.call_later(timeout_s, expire, proto)

    def disarm(proto) -> None:
        timer = getattr(proto, "snapserve_read_timer", None)
        if timer is not None:
            timer.cancel()
            proto.snapserve_read_timer = None

    for cls in (httptools_impl.HttpToolsProtocol, h11_impl.H11Protocol):
        originals = getattr(cls, "snapserve_originals", None) or {
            name: getattr(cls, name) for name in ("connection_made", "connection_lost", "data_received")}
        cls.snapserve_originals = originals

        def connection_made(self, transport, _orig=originals["connection_made"]):
            _orig(self, transport)
            arm(self)

        def connection_lost(self, exc, _orig=originals["connection_lost"]):
            disarm(self)
            _orig(self, exc)

        cls.connection_made, cls.connection_lost = connection_made, connection_lost
        if cls is httptools_impl.HttpToolsProtocol:
            # httptools calls on_message_begin at a request's first byte, on_message_complete at its last
            begin = getattr(cls.on_message_begin, "snapserve_original", cls.on_message_begin)
            complete = getattr(cls.on_message_complete, "snapserve_original", cls.on_message_complete)

            def on_message_begin(self, _orig=begin):
                arm(self)
                _orig(self)

            def on_message_complete(self, _orig=complete):
                disarm(self)
                _orig(self)

            on_message_begin.snapserve_original, on_message_complete.snapserve_original = begin, complete
            cls.on_message_begin, cls.on_message_complete = on_message_begin, on_message_complete
        else:
            import h11

            def data_received(self, data, _orig=originals["data_received"]):
                _orig(self, data)
                if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                    arm(self)  # a request (or the next one) is arriving
                else:
                    disarm(self)  # complete (DONE), or the connection is ending

            cls.data_received = data_received


# -- 9. gRPC: the call's deadline, and our errors' status codes --------------------------------
def grpc_deadlines_and_errors() -> None:
    """Over gRPC a client's deadline travels in the call, not in a header: kserve's servicer turns
    the call's metadata into the model's headers (``servicer.to_headers``); add ``x-request-timeout-ms``
    from ``context.time_remaining()`` when the client set a deadline and no such header. And kserve's
    exception interceptor answers INTERNAL to every exception it does not know: a ``ServingError``
    gets the code of its ``error_type`` instead (RESOURCE_EXHAUSTED for a 429, DEADLINE_EXCEEDED for a
    504, ...), with ``retry-after`` in the trailing metadata when it has one."""
    from grpc import StatusCode
    from kserve.protocol.grpc import interceptors, servicer

    from snapserve.errors import GRPC_CODE, ServingError

    to_headers = getattr(servicer.to_headers, "snapserve_original", servicer.to_headers)

    def with_deadline(context):
        headers = to_headers(context)
        remaining = context.time_remaining()
        if remaining is not None and "x-request-timeout-ms" not in headers:
            headers["x-request-timeout-ms"] = f"{max(remaining, 0.0) * 1000:.1f}"
        return headers

    with_deadline.snapserve_original = to_headers
    servicer.to_headers = with_deadline

    cls = interceptors.ExceptionToStatusInterceptor
    handle = getattr(cls.handle_exception, "snapserve_original", cls.handle_exception)

    async def handle_exception(self, ex, request_or_iterator, context, method_name):
        if isinstance(ex, ServingError):
            if ex.retry_after is not None:
                context.set_trailing_metadata(tuple((k.lower(), v) for k, v in ex.headers().items()))
            await context.abort(getattr(StatusCode, GRPC_CODE[ex.error_type]), ex.reason)
        return await handle(self, ex, request_or_iterator, context, method_name)

    handle_exception.snapserve_original = handle
    cls.handle_exception = handle_exception


# -- 10. kserve's binary tensors turned into JSON lists, element by element ----------------------
_decoding = threading.local()


def fast_tensors() -> None:
    """kserve decodes every binary v2 body (``InferRequest.from_bytes`` on the predictor,
    ``InferResponse.from_bytes`` in the transformer's client) by ``set_data_from_numpy(binary_data=False)``,
    which builds a JSON list one element at a time (``[val.item() for val in t.flatten()]``), to be
    turned back into an array by ``as_numpy`` (and on the predictor, checked value by value as if a
    client had typed it). For the transformer that was a third of its event loop at 8 clients x 64
    sentences (py-spy), and on a GPU, where the forward takes 2-4 ms, the servers' CPU is the limit.

    - Inside ``from_bytes`` a numeric tensor keeps its raw bytes and no list, as a gRPC
      ``raw_input_contents`` tensor does (``has_raw_data``): ``as_numpy`` reads them without a copy.
      kserve's own size check still runs in ``from_bytes`` (it reads the bytes as the declared shape
      before this call; a mismatch is the ValueError that patch 3 answers with 400).
    - Elsewhere the JSON list is built by ``ndarray.tolist()``: the same Python scalars, in C, after
      kserve's own datatype and shape checks (the original runs with ``binary_data=True`` first, and
      what that sets besides is put back as its JSON path leaves it)."""
    import numpy as np
    from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

    for cls in (InferInput, InferOutput):
        original = getattr(cls.set_data_from_numpy, "snapserve_original", cls.set_data_from_numpy)

        def set_data_from_numpy(self, tensor, binary_data: bool = True, _original=original):
            if (binary_data or not isinstance(tensor, np.ndarray) or tensor.dtype.kind not in "biuf"
                    or self.datatype == "BYTES"):
                return _original(self, tensor, binary_data)
            if getattr(_decoding, "active", False) and self._raw_data is not None:
                # from_bytes: ``tensor`` is this tensor's own bytes read as its datatype and shape, so
                # kserve's checks hold by construction; the bytes stay, as kserve's JSON path leaves
                # the parameters
                if self._parameters:
                    self._parameters.pop("binary_data_size", None)
                self._data = None
                return None
            had_parameters = self._parameters is not None
            _original(self, tensor, True)  # kserve's datatype and shape checks
            self._parameters.pop("binary_data_size", None)
            if not had_parameters:
                self._parameters = None
            self._raw_data, self._data = None, tensor.reshape(-1).tolist()
            return None

        set_data_from_numpy.snapserve_original = original
        cls.set_data_from_numpy = set_data_from_numpy

    for cls in (InferRequest, InferResponse):
        decode = getattr(cls.from_bytes, "snapserve_original", cls.from_bytes.__func__)

        def from_bytes(klass, *args, _decode=decode, **kwargs):
            _decoding.active = True
            try:
                return _decode(klass, *args, **kwargs)
            finally:
                _decoding.active = False

        from_bytes.snapserve_original = decode
        cls.from_bytes = classmethod(from_bytes)
