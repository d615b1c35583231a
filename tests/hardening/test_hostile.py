"""A hand-written hostile corpus against both servers: every request gets its 4xx (with
{"error", "error_type"} from the status table) or a correct answer — never a 5xx, never a hang."""

from __future__ import annotations

import dataclasses
import json

import httpx
import numpy as np
import pytest

V1, V2, OPENAI = "/v1/models/snap:predict", "/v2/models/snap/infer", "/openai/v1/embeddings"
TOKENIZE, DECODE, RERANK, TEI_RERANK = "/tokenize", "/decode", "/v1/rerank", "/rerank"
TIMEOUT = 60  # an answer later than this is a hang


def j(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def v2(*inputs, **extra) -> bytes:
    return j({"inputs": list(inputs), **extra})


def text(data, shape=None, datatype="BYTES", name="text") -> dict:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


@dataclasses.dataclass
class Case:
    name: str
    path: str
    body: bytes
    expect: tuple  # allowed statuses
    servers: str = "tp"  # t: transformer, p: predictor
    headers: dict = dataclasses.field(default_factory=lambda: {"content-type": "application/json"})
    known: str = ""  # a finding of /tmp/hardening-findings.txt this case still trips


BIN_HEADER = b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":16}}]}'
DEEP = 100_000
CASES = [
    # size
    Case("huge body (40 MB)", V1, b'{"instances": ["' + b"a" * 40_000_000 + b'"]}', (413,)),
    Case("a million-character text", V1, j({"instances": ["a" * 1_000_000]}), (413,), "t"),
    Case("a million characters of words", V1, j({"instances": ["word " * 200_000]}), (200,), "p"),
    Case("10,000 texts in one request (v1)", V1, j({"instances": ["hello"] * 10_000}), (413,), "t"),
    Case("10,000 texts in one request (OpenAI)", OPENAI, j({"model": "snap", "input": ["hi"] * 10_000}), (413,), "t"),
    Case("10,000 texts in one request (v2)", V2, v2(text(["hi"] * 10_000)), (413,), "t"),
    Case("over-long text with truncate false", OPENAI,
         j({"model": "snap", "input": "word " * 2000, "truncate": False}), (422,), "t"),
    # structure
    Case("deeply nested JSON arrays", V1, b'{"instances":' + b"[" * DEEP + b"]" * DEEP + b"}", (400,)),
    Case("deeply nested JSON objects", V1, b'{"instances":["x"],"p":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}",
         (400,)),
    Case("deeply nested v2 body", V2, b'{"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}", (400,)),
    Case("deeply nested OpenAI body", OPENAI, b'{"model":"snap","input":' + b"[" * 5000 + b"]" * 5000 + b"}",
         (400,), "t"),
    Case("not JSON", V1, b"\x00\x01\x02 not json", (400,)),
    Case("empty body", V1, b"", (400,)),
    Case("JSON array at the top (v2)", V2, b"[1, 2]", (400,)),
    Case("inputs null (v2)", V2, b'{"inputs": null}', (400,)),
    # encoding
    Case("invalid UTF-8 (v1)", V1, b'{"instances": ["\xff\xfe bad"]}', (400,)),
    Case("invalid UTF-8 (OpenAI)", OPENAI, b'{"model": "snap", "input": "\xc3\x28"}', (400,), "t"),
    Case("invalid UTF-8 (v2)", V2, b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["\xc3\x28"]}]}',
         (400,)),
    Case("lone surrogate escape", V1, b'{"instances": ["\\ud800"]}', (400,)),
    Case("NaN", V1, b'{"instances": [NaN]}', (400,)),
    Case("Infinity in v2 BYTES data", V2, b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],'
         b'"data":[Infinity]}]}', (400,)),
    Case("a number too large for a double", V1, b'{"instances": [1' + b"0" * 5000 + b"]}", (400,)),
    # types
    Case("numbers instead of strings", V1, j({"instances": [1, 2, 3]}), (400,)),
    Case("objects instead of strings", V1, j({"instances": [{"text": "x"}]}), (400,)),
    Case("lists instead of strings", V1, j({"instances": [["a", "b"]]}), (400,)),
    Case("null instances", V1, j({"instances": None}), (400,)),
    Case("a string instead of a list", V1, j({"instances": "hello"}), (400,)),
    Case("empty list", V1, j({"instances": []}), (400,)),
    Case("OpenAI input a number", OPENAI, j({"model": "snap", "input": 123}), (400,), "t"),
    Case("OpenAI input token lists", OPENAI, j({"model": "snap", "input": [[1, 2, 3]]}), (400,), "t"),
    Case("OpenAI input an object", OPENAI, j({"model": "snap", "input": {"a": "b"}}), (400,), "t"),
    Case("OpenAI empty input", OPENAI, j({"model": "snap", "input": []}), (400,), "t"),
    Case("OpenAI dimensions above the width", OPENAI, j({"model": "snap", "input": "x", "dimensions": 385}), (400,),
         "t"),
    Case("OpenAI dimensions zero", OPENAI, j({"model": "snap", "input": "x", "dimensions": 0}), (400,), "t"),
    Case("OpenAI dimensions huge", OPENAI, j({"model": "snap", "input": "x", "dimensions": 2**80}), (400,), "t"),
    Case("OpenAI dimensions a list", OPENAI, j({"model": "snap", "input": "x", "dimensions": [64]}), (400,), "t"),
    Case("OpenAI unknown prompt", OPENAI, j({"model": "snap", "input": "x", "prompt_name": "q"}), (400,), "t"),
    Case("OpenAI prompt_name an object", OPENAI, j({"model": "snap", "input": "x", "prompt_name": {}}), (400,), "t"),
    Case("v1 dimensions a string", V1, j({"instances": ["x"], "parameters": {"dimensions": "64"}}), (400,), "t"),
    Case("v2 dimensions negative", V2, v2(text(["x"]), parameters={"dimensions": -4}), (400,), "t"),
    Case("OpenAI unknown encoding", OPENAI, j({"model": "snap", "input": "x", "encoding_format": 5}), (400,), "t"),
    Case("truncate as a string", V1, j({"instances": ["x"], "parameters": {"truncate": "no"}}), (400,), "t"),
    # v2 datatypes and shapes
    Case("v2 text as FP32", V2, v2(text([1.0], datatype="FP32")), (400,)),
    Case("v2 unknown datatype", V2, v2(text(["x"], datatype="WAT")), (400,)),
    Case("v2 shape larger than data", V2, v2(text(["x"], shape=[3])), (400,)),
    Case("v2 shape of 10^12", V2, v2(text(["x"], shape=[10**12])), (400,)),
    Case("v2 negative shape", V2, v2(text(["x"], shape=[-1])), (400,)),
    Case("v2 empty input", V2, v2(text([], shape=[0])), (400,)),
    Case("v2 numbers as BYTES", V2, v2(text([1, 2])), (400,)),
    Case("v2 objects as BYTES", V2, v2(text([{"a": 1}])), (400,)),
    Case("v2 no inputs", V2, j({"inputs": []}), (400,)),
    Case("v2 token ids as FP32", V2, v2(text([1.0, 2.0], shape=[1, 2], datatype="FP32", name="input_ids")), (400,),
         "p"),
    Case("v2 token ids 1-D", V2, v2(text([101, 102], shape=[2], datatype="INT64", name="input_ids")), (400,), "p"),
    Case("v2 token ids out of the vocabulary", V2, v2(text([-5, 99999999], shape=[1, 2], datatype="INT64",
                                                         name="input_ids")), (400,), "p"),
    Case("v2 token ids too long", V2, v2(text([5] * 600, shape=[1, 600], datatype="INT64", name="input_ids")),
         (422,), "p"),
    Case("v2 mask of another shape", V2, v2(text([1, 2, 3], shape=[1, 3], datatype="INT64", name="input_ids"),
                                            text([1, 1], shape=[1, 2], datatype="INT64", name="attention_mask")),
         (400,), "p"),
    Case("v2 token ids too large for INT64", V2, v2(text([2**70], shape=[1, 1], datatype="INT64", name="input_ids")),
         (400,), "p"),
    Case("v2 binary body shorter than declared", V2, BIN_HEADER + b"\x01\x02\x03", (400,),
         headers={"content-type": "application/octet-stream", "inference-header-content-length": str(len(BIN_HEADER))}),
    Case("v2 binary header length not a number", V2, BIN_HEADER, (400,),
         headers={"content-type": "application/octet-stream", "inference-header-content-length": "abc"}),
    # names and routes
    Case("unknown model (v1)", "/v1/models/nope:predict", j({"instances": ["x"]}), (404,)),
    Case("unknown model (v2)", "/v2/models/nope/infer", v2(text(["x"])), (404,)),
    Case("unknown model (OpenAI)", OPENAI, j({"model": "nope", "input": "x"}), (404,), "t"),
    Case("model repository unload", "/v2/repository/models/snap/unload", b"", (404,)),
    Case("explain", "/v1/models/snap:explain", j({"instances": ["x"]}), (404,)),
    # tokenisation routes
    Case("tokenize 10,000 texts", TOKENIZE, j({"inputs": ["hi"] * 10_000}), (413,), "t"),
    Case("tokenize a million characters", TOKENIZE, j({"inputs": "a" * 1_000_000}), (413,), "t"),
    Case("tokenize nested lists", TOKENIZE, j({"inputs": [["a"]]}), (400,), "t"),
    Case("tokenize invalid UTF-8", TOKENIZE, b'{"inputs": "\xc3\x28"}', (400,), "t"),
    Case("tokenize deeply nested", TOKENIZE, b'{"inputs":' + b"[" * 5000 + b"]" * 5000 + b"}", (400,), "t"),
    Case("tokenize Korean and emoji", TOKENIZE, j({"inputs": ["안녕하세요 🌍", "a\u0000b"]}), (200,), "t"),
    Case("decode ids past the vocabulary", DECODE, j({"ids": [2**63, -1]}), (400,), "t"),
    Case("decode ids too large for int64", DECODE, j({"ids": [2**70]}), (400,), "t"),
    Case("decode floats", DECODE, j({"ids": [1.5]}), (400,), "t"),
    Case("decode ragged nesting", DECODE, j({"ids": [[1, [2]]]}), (400,), "t"),
    Case("decode 10,000 sequences", DECODE, j({"ids": [[101]] * 10_000}), (413,), "t"),
    Case("decode a long sequence", DECODE, j({"ids": [1037] * 100_000}), (200,), "t"),
    # rerank routes on an embedding model: a clear 404, no work done
    Case("rerank on an embedding model", RERANK, j({"query": "q", "documents": ["a"]}), (404,), "t"),
    Case("TEI rerank on an embedding model", TEI_RERANK, j({"query": "q", "texts": ["a"]}), (404,), "t"),
    Case("v2 query input on an embedding model", V2, v2(text(["q"], name="query"), text(["a"])), (404,), "t"),
    Case("rerank not JSON", RERANK, b"\x00 nope", (400,), "t"),
    Case("rerank top-level array", TEI_RERANK, b"[1]", (400,), "t"),
    # languages
    Case("Korean and emoji", V1, j({"instances": ["안녕하세요, 세계! 임베딩을 만들어 주세요.", "🌍🚀👩‍👩‍👧‍👦 😀" * 50,
                                                  "a\u0000b\u200bc\ufeff"]}), (200,)),
    Case("Korean and emoji (v2)", V2, v2(text(["한국어 문장입니다 🙂", "emoji only 🎉🎉"])), (200,)),
    Case("Korean and emoji (OpenAI)", OPENAI, j({"model": "snap", "input": ["서울은 대한민국의 수도입니다 🇰🇷"]}), (200,), "t"),
    Case("empty string text", V1, j({"instances": [""]}), (200,)),
]


def targets():
    for case in CASES:
        for server in case.servers:
            marks = [pytest.mark.xfail(reason=f"finding {case.known}", strict=False)] if case.known else []
            yield pytest.param(case, server, id=f"{'transformer' if server == 't' else 'predictor'}: {case.name}",
                               marks=marks)


def check_answer(case: Case, r: httpx.Response) -> None:
    if case.path in (TOKENIZE, DECODE):
        assert isinstance(r.json(), list) and r.json()
        return
    if case.path == OPENAI:
        data = r.json()["data"]
        vectors = np.asarray([d["embedding"] for d in data], dtype=np.float32)
    elif case.path == V1:
        vectors = np.asarray(r.json()["predictions"], dtype=np.float32)
    else:
        out = r.json()["outputs"][0]
        vectors = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    assert vectors.shape[1] == 384 and np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


@pytest.mark.parametrize(("case", "server"), targets())
def test_hostile_request_gets_its_4xx_or_a_correct_answer(servers, case, server):
    base = servers.transformer_url if server == "t" else servers.predictor_url
    r = httpx.post(base + case.path, content=case.body, headers=case.headers, timeout=TIMEOUT)
    assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert r.status_code in case.expect, f"{r.status_code}: {r.text[:300]}"
    if r.status_code == 200:
        check_answer(case, r)
        return
    payload = r.json()
    if case.path == OPENAI:  # OpenAI's shape on the OpenAI routes, nothing else
        assert set(payload) == {"error"} and set(payload["error"]) == {"message", "type", "param", "code"}, payload
        payload = {"error": payload["error"]["message"], "error_type": payload["error"]["type"]}
    assert set(payload) == {"error", "error_type"}, payload  # the status table's shape, nothing else
    assert "Traceback" not in r.text and "Exception" not in payload["error"]


def test_servers_still_serve_after_the_corpus(servers):
    for base in (servers.transformer_url, servers.predictor_url):
        assert httpx.get(base + "/v2/health/ready", timeout=10).status_code == 200
        r = httpx.post(base + V1, json={"instances": ["still here"]}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"][0]) == 384
