"""One test per patch in snapserve/http/kserve_compat.py: each fails when the internal it relies on changes."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import types

import numpy as np
import pytest

from snapserve.http import kserve_compat


def test_another_kserve_version_is_refused_with_a_clear_message():
    kserve_compat.check_version("0.21.0")
    with pytest.raises(RuntimeError, match=r"written for kserve 0\.21\.x and this is kserve 0\.22\.0"):
        kserve_compat.check_version("0.22.0")


def test_1_kserve_parser_is_a_module_global_argparse_parser_with_its_flags():
    parser = kserve_compat.kserve_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    dests = {a.dest for a in parser._actions}
    assert {"http_port", "grpc_port", "model_name", "predictor_host", "predictor_protocol", "workers",
            "predictor_request_timeout_seconds", "predictor_use_ssl"} <= dests


def test_2_kserve_reads_its_handlers_from_module_names_when_the_server_starts():
    from kserve.protocol.rest import server

    for name in kserve_compat.KSERVE_HANDLERS:
        assert callable(getattr(server, name)), name
    source = inspect.getsource(server.RESTServer._add_exception_handlers)
    for name in kserve_compat.KSERVE_HANDLERS:
        assert name in source, f"kserve no longer registers {name} in _add_exception_handlers"
    assert "_add_exception_handlers(app)" in inspect.getsource(server.RESTServer.create_application)


def test_2_replacing_the_handlers_rebinds_every_name():
    from kserve.protocol.rest import server

    saved = {name: getattr(server, name) for name in kserve_compat.KSERVE_HANDLERS}
    ours = {key: (lambda key=key: key) for key in set(kserve_compat.KSERVE_HANDLERS.values())}
    try:
        kserve_compat.replace_kserve_handlers(ours)
        assert {n: getattr(server, n)() for n in saved} == kserve_compat.KSERVE_HANDLERS
    finally:
        for name, handler in saved.items():
            setattr(server, name, handler)


def test_3_decode_inference_request_keeps_its_signature_and_is_wrapped_once():
    from kserve.errors import InvalidInput
    from kserve.protocol import dataplane

    original = dataplane.DataPlane.decode_inference_request
    assert list(inspect.signature(original).parameters) == ["self", "body", "headers", "model_name"]
    try:
        kserve_compat.guard_binary_decoding()
        wrapped = dataplane.DataPlane.decode_inference_request
        kserve_compat.guard_binary_decoding()
        assert dataplane.DataPlane.decode_inference_request is wrapped
        plane = dataplane.DataPlane.__new__(dataplane.DataPlane)
        headers = {"inference-header-content-length": "not-a-number", "content-type": "application/octet-stream"}
        with pytest.raises(InvalidInput, match="malformed binary tensor request"):
            wrapped(plane, b"{}", headers, "m")
    finally:
        dataplane.DataPlane.decode_inference_request = original


def test_4_uvicorn_server_handle_exit_is_called_with_the_signal():
    import uvicorn

    assert list(inspect.signature(uvicorn.Server.handle_exit).parameters) == ["self", "sig", "frame"]
    original = uvicorn.Server.handle_exit
    seen = []
    try:
        kserve_compat.intercept_exit(lambda server, sig: seen.append(sig) or sig == 15)
        server = uvicorn.Server(uvicorn.Config(app=None))
        server.handle_exit(15, None)
        assert seen == [15] and not server.should_exit  # taken: a drain runs instead
        server.handle_exit(2, None)
        assert server.should_exit  # declined: uvicorn's own stop
    finally:
        uvicorn.Server.handle_exit = original


def test_5_model_server_gathers_its_servers_list_on_its_loop():
    from kserve import model_server

    assert "self.servers = []" in inspect.getsource(model_server.ModelServer.__init__)
    assert "asyncio.gather(*self.servers)" in inspect.getsource(model_server.ModelServer)
    holder: dict = {}

    fake = types.SimpleNamespace(servers=[])
    kserve_compat.run_beside(fake, kserve_compat.remember_loop(holder))

    async def main():
        await asyncio.gather(*fake.servers)
        return asyncio.get_running_loop()

    assert asyncio.run(main()) is holder["loop"]


def test_3b_a_body_without_the_header_length_is_read_as_json():
    """tritonclient's JSON-only requests (binary_data=False) carry neither a content type nor
    Inference-Header-Content-Length; Triton reads them as JSON, kserve alone refuses them."""
    from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
    from kserve.errors import InvalidInput
    from kserve.protocol import dataplane

    assert INFERENCE_CONTENT_LENGTH_HEADER == kserve_compat.INFERENCE_HEADER
    body = b'{"id":"r1","inputs":[{"name":"text","datatype":"BYTES","shape":[2],"data":["a","b"]}]}'
    original = dataplane.DataPlane.decode_inference_request
    plane = dataplane.DataPlane.__new__(dataplane.DataPlane)
    with pytest.raises(InvalidInput, match="header is missing"):  # what the patch is for
        original(plane, body, {}, "m")
    try:
        kserve_compat.guard_binary_decoding()
        request = dataplane.DataPlane.decode_inference_request(plane, body, {"accept": "*/*"}, "m")
        assert request.id == "r1" and request.inputs[0].data == ["a", "b"]
        with pytest.raises(InvalidInput, match="malformed"):  # headerless but not a v2 body: still a 400
            dataplane.DataPlane.decode_inference_request(plane, b"[1, 2]", {}, "m")
    finally:
        dataplane.DataPlane.decode_inference_request = original


def test_6_model_metadata_takes_the_platform_from_the_model():
    from kserve import Model
    from kserve.model_repository import ModelRepository
    from kserve.protocol import dataplane

    original = dataplane.DataPlane.model_metadata
    assert '"platform": ""' in inspect.getsource(original)  # what the patch is for

    class Described(Model):
        platform = "snapserve:test:embedding"

        def get_input_types(self):
            return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    repo = ModelRepository()
    repo.update(Described("m"))
    plane = dataplane.DataPlane(model_registry=repo)
    try:
        kserve_compat.report_model_platform()
        wrapped = dataplane.DataPlane.model_metadata
        kserve_compat.report_model_platform()
        assert dataplane.DataPlane.model_metadata is wrapped
        answer = asyncio.run(plane.model_metadata("m"))
        assert answer["platform"] == "snapserve:test:embedding"
        assert answer["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    finally:
        dataplane.DataPlane.model_metadata = original


def test_7_grpc_raw_input_contents_are_seen_as_raw_data():
    from kserve import InferRequest
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest

    raw = ModelInferRequest(model_name="m", inputs=[ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[1])], raw_input_contents=[b"\x05\x00\x00\x00hello"])
    item = InferRequest.from_grpc(raw).inputs[0]
    assert kserve_compat.has_raw_data(item) and item.data == []
    assert item.as_numpy().tolist() == [b"hello"]
    typed = ModelInferRequest(model_name="m", inputs=[ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[1], contents={"bytes_contents": [b"hi"]})])
    assert not kserve_compat.has_raw_data(InferRequest.from_grpc(typed).inputs[0])


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_8_a_stalled_request_gets_408_and_a_complete_one_is_answered(http):
    """uvicorn's own server with each HTTP protocol: a silent connection and a half-sent body are
    closed with 408 after the read timeout; a complete request is still answered normally."""
    import uvicorn

    closed = []
    kserve_compat.limit_client_reads(0.5, lambda: closed.append(1))

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main():
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, http=http, log_config=None, lifespan="off"))
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]

        async def exchange(data: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            got = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return got

        silent = await exchange(b"")
        half = await exchange(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        whole = await exchange(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc")
        server.should_exit = True
        await serving
        return silent, half, whole

    silent, half, whole = asyncio.run(main())
    assert silent.startswith(b"HTTP/1.1 408 ") and b'"error_type":"request_timeout"' in silent
    assert half.startswith(b"HTTP/1.1 408 ")
    assert whole.startswith(b"HTTP/1.1 200 ") and whole.endswith(b"ok")
    assert len(closed) == 2


def test_9_grpc_servicer_reads_headers_through_to_headers_and_the_interceptor_maps_exceptions():
    from kserve.protocol.grpc import interceptors, servicer

    kserve_compat.grpc_deadlines_and_errors()
    assert "to_headers(context)" in inspect.getsource(servicer.InferenceServicer.ModelInfer)
    assert list(inspect.signature(interceptors.ExceptionToStatusInterceptor.handle_exception).parameters) == [
        "self", "ex", "request_or_iterator", "context", "method_name"]

    class Context:
        def invocation_metadata(self):
            return (types.SimpleNamespace(key="x-request-id", value="abc"),)

        def time_remaining(self):
            return 1.5

    assert servicer.to_headers(Context()) == {"x-request-id": "abc", "x-request-timeout-ms": "1500.0"}


@pytest.mark.parametrize("cls_name", ["InferInput", "InferOutput"])
@pytest.mark.parametrize("array", [np.arange(12, dtype=np.int64).reshape(3, 4), np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
                                   np.array([True, False]), np.array([1.5, 2.25], dtype=np.float16), np.array([], dtype=np.int32)])
@pytest.mark.parametrize("parameters", [None, {"binary_data_size": 9, "other": 1}])
def test_10_json_lists_are_what_kserve_makes(cls_name, array, parameters):
    """Outside from_bytes: the same _data (Python scalars of the same types), _raw_data and parameters
    as kserve's own element-by-element path, and kserve's own shape error."""
    from kserve.errors import InferenceError
    from kserve.protocol import infer_type
    from kserve.protocol.infer_type import from_np_dtype

    kserve_compat.fast_tensors()
    cls = getattr(infer_type, cls_name)
    original = cls.set_data_from_numpy.snapserve_original

    def made(method):
        t = cls(name="x", shape=list(array.shape), datatype=from_np_dtype(array.dtype),
                parameters=dict(parameters) if parameters else None)
        method(t, array, binary_data=False)
        return t

    fast, slow = made(cls.set_data_from_numpy), made(original)
    assert fast.data == slow.data and [type(v) for v in fast.data] == [type(v) for v in slow.data]
    assert fast._raw_data is None and slow._raw_data is None
    assert fast.parameters == slow.parameters
    assert np.array_equal(fast.as_numpy(), array) and fast.as_numpy().dtype == array.dtype
    wrong = cls(name="x", shape=[99], datatype=from_np_dtype(array.dtype))
    with pytest.raises(InferenceError, match="shape"):
        wrong.set_data_from_numpy(array, binary_data=False)


def _binary_body(tensors: dict[str, np.ndarray], answer: bool) -> tuple[bytes, int]:
    """A v2 REST body with binary tensors, as the transformer sends (a request) or the predictor answers."""
    from kserve import InferRequest, InferResponse
    from kserve.protocol.infer_type import InferInput, InferOutput, from_np_dtype

    items = []
    for name, array in tensors.items():
        item = (InferOutput if answer else InferInput)(name=name, shape=list(array.shape),
                                                       datatype=from_np_dtype(array.dtype))
        item.set_data_from_numpy(array, binary_data=True)
        items.append(item)
    if answer:
        return InferResponse(response_id="1", model_name="m", infer_outputs=items, use_binary_outputs=True).to_rest()
    return InferRequest(model_name="m", infer_inputs=items, request_id="r").to_rest()


def test_10_a_binary_v2_answer_stays_raw_and_decodes_to_the_same_array():
    from kserve import InferResponse

    kserve_compat.fast_tensors()
    matrix = np.random.default_rng(0).standard_normal((64, 384)).astype(np.float32)
    body, json_length = _binary_body({"embedding": matrix}, answer=True)
    out = InferResponse.from_bytes(body, json_length).outputs[0]
    assert kserve_compat.has_raw_data(out) and out.data is None and "binary_data_size" not in (out.parameters or {})
    assert out.as_numpy().dtype == np.float32 and np.array_equal(out.as_numpy(), matrix)


def test_10_a_binary_v2_request_stays_raw_and_a_wrong_size_is_still_an_error():
    from kserve import InferRequest
    from kserve.protocol.infer_type import InferInput

    from snapserve import tensors

    kserve_compat.fast_tensors()
    ids = np.arange(2 * 7, dtype=np.int64).reshape(2, 7)
    body, json_length = _binary_body({"input_ids": ids}, answer=False)
    request = InferRequest.from_bytes(body, json_length, "m")
    item = request.inputs[0]
    assert kserve_compat.has_raw_data(item) and item.data is None
    tensors.check(item, integers=True)  # the predictor's check: raw data, nothing to look at value by value
    assert np.array_equal(item.as_numpy(), ids)
    # one INT64 short: kserve's reshape to the declared shape fails (patch 3 answers 400)
    with pytest.raises(ValueError):
        InferRequest.from_bytes(body[:-8], json_length, "m")
    # after a decode, the JSON path is kserve's again
    t = InferInput(name="x", shape=[2], datatype="INT64")
    t.set_data_from_numpy(np.array([1, 2]), binary_data=False)
    assert t.data == [1, 2] and t._raw_data is None
