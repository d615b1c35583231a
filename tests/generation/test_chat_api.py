"""Chat and completions through the real transformer and predictor, on SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from tokenizers import Tokenizer

from transformer.chat.template import ChatTemplate

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def chat(pair, timeout=300, **body) -> httpx.Response:
    body.setdefault("model", pair.model_name)
    return httpx.post(f"{pair.transformer_url}/openai/v1/chat/completions", json=body, timeout=timeout)


def stream_chunks(pair, path="chat/completions", **body) -> list[dict]:
    body.setdefault("model", pair.model_name)
    chunks = []
    with httpx.stream("POST", f"{pair.transformer_url}/openai/v1/{path}", json={**body, "stream": True},
                      timeout=300) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.startswith("data: ")
        chunks.append(json.loads(line[6:]))
    return chunks


def prompt_ids(pair, messages) -> list[int]:
    tokenizer = Tokenizer.from_file(str(pair.model_dir / "tokenizer.json"))
    return tokenizer.encode(ChatTemplate.load(pair.model_dir).render(messages), add_special_tokens=False).ids


def test_greedy_equals_model_generate_token_for_token(pair, reference):
    greedy, tokenizer = reference
    ids = prompt_ids(pair, QUESTION)
    assert ids == tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True,
                                                return_dict=True)["input_ids"]
    expected = greedy(ids, 24)
    # the predictor's token ids
    answer = httpx.post(f"{pair.predictor_url}/v2/models/{pair.model_name}/generate", timeout=300,
                        json={"input_ids": ids, "parameters": {"max_tokens": 24, "temperature": 0}}).json()
    assert answer["output_ids"] == expected
    # and the transformer's text of them
    reply = chat(pair, messages=QUESTION, max_tokens=24, temperature=0).json()
    assert reply["choices"][0]["message"]["content"] == tokenizer.decode(expected, skip_special_tokens=True)
    assert reply["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(expected),
                              "total_tokens": len(ids) + len(expected)}
    assert reply["choices"][0]["finish_reason"] == ("stop" if expected[-1] == 2 else "length")


def test_max_tokens_gives_length(pair):
    for key in ("max_tokens", "max_completion_tokens"):
        reply = chat(pair, messages=QUESTION, temperature=0, ignore_eos=True, **{key: 5}).json()
        assert reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"]["completion_tokens"] == 5


def test_stop_strings_end_the_reply_and_never_leak(pair):
    full = chat(pair, messages=QUESTION, max_tokens=24, temperature=0).json()["choices"][0]["message"]["content"]
    assert "Paris" in full, full
    cut = full.index("Paris") + 2  # "Pa" + "ris": the stop string starts inside a token
    stop = full[cut - 4:cut + 2]
    expected = full[:full.index(stop)]
    reply = chat(pair, messages=QUESTION, max_tokens=24, temperature=0, stop=[stop, "never-seen"]).json()
    assert reply["choices"][0]["message"]["content"] == expected
    assert reply["choices"][0]["finish_reason"] == "stop"
    chunks = stream_chunks(pair, messages=QUESTION, max_tokens=24, temperature=0, stop=stop)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == expected and stop not in text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_with_usage_matches_the_non_streamed_reply(pair):
    whole = chat(pair, messages=QUESTION, max_tokens=16, temperature=0).json()
    chunks = stream_chunks(pair, messages=QUESTION, max_tokens=16, temperature=0,
                           stream_options={"include_usage": True})
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_korean_and_emoji_stream_without_broken_characters(pair):
    prompt = "다음 문장을 이어서 쓰세요: 안녕하세요 😀 오늘은 날씨가 정말 좋아서 🌞"
    body = {"prompt": prompt, "max_tokens": 24, "temperature": 0}
    whole = httpx.post(f"{pair.transformer_url}/openai/v1/completions", json={"model": pair.model_name, **body},
                       timeout=300).json()
    chunks = stream_chunks(pair, path="completions", **body)
    pieces = [c["choices"][0]["text"] for c in chunks]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == whole["choices"][0]["text"]
    assert whole["object"] == "text_completion" and whole["usage"]["completion_tokens"] >= 1
    # a Korean chat message goes through the template too
    reply = chat(pair, messages=[{"role": "user", "content": "안녕하세요 😀"}], max_tokens=8, temperature=0)
    assert reply.status_code == 200 and "\ufffd" not in reply.json()["choices"][0]["message"]["content"]


def test_the_openai_sdk(pair):
    from openai import OpenAI

    client = OpenAI(base_url=f"{pair.transformer_url}/openai/v1", api_key="unused", timeout=300)
    reply = client.chat.completions.create(model=pair.model_name, messages=QUESTION, max_tokens=12, temperature=0)
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.usage.completion_tokens >= 1
    stream = client.chat.completions.create(model=pair.model_name, messages=QUESTION, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert [m.id for m in client.models.list()] == [pair.model_name]


@pytest.mark.parametrize("body, status, error_type", [
    ({"messages": []}, 400, "validation"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "validation"),
    ({"messages": [{"role": "user", "content": {"text": "hi"}}]}, 400, "validation"),
    ({"messages": [{"role": "user"}]}, 400, "validation"),
    ({"messages": "hello"}, 400, "validation"),
    ({"messages": QUESTION, "n": 2}, 400, "validation"),
    ({"messages": QUESTION, "max_tokens": 0}, 400, "validation"),
    ({"messages": QUESTION, "temperature": -1}, 400, "validation"),
    ({"messages": QUESTION, "stop": [1]}, 400, "validation"),
    ({"messages": QUESTION, "logprobs": True}, 400, "validation"),
    ({"messages": QUESTION, "model": "gpt-4"}, 404, "not_found"),
])
def test_bad_requests_get_4xx_from_the_status_table(pair, body, status, error_type):
    response = chat(pair, **body)
    assert response.status_code == status, response.text
    error = response.json()["error"]  # OpenAI's shape on the OpenAI routes
    assert (error["type"], error["code"]) == (error_type, status) and error["message"]


def test_a_too_long_prompt_is_refused_with_its_token_count(pair):
    long = "hello " * 9000  # about 9,000 tokens; the context is 8,192
    response = chat(pair, messages=[{"role": "user", "content": long}], max_tokens=4)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "unprocessable"
    count = len(prompt_ids(pair, [{"role": "user", "content": long}]))
    assert f"{count} tokens" in response.json()["error"]["message"]
    direct = httpx.post(f"{pair.predictor_url}/v2/models/{pair.model_name}/generate", timeout=60,
                        json={"input_ids": [1] * 8192})
    assert direct.status_code == 422 and "8192 tokens" in direct.json()["error"]


def test_the_predictor_serves_text_alone(pair):
    url = f"{pair.predictor_url}/v2/models/{pair.model_name}/generate"
    answer = httpx.post(url, timeout=300, json={"text_input": "The capital of France is",
                                                "parameters": {"max_tokens": 6, "temperature": 0}}).json()
    assert isinstance(answer["text_output"], str) and answer["text_output"]
    assert 1 <= len(answer["output_ids"]) <= 6
    assert answer["usage"]["completion_tokens"] == len(answer["output_ids"])
    bad = httpx.post(url, timeout=30, json={"input_ids": [1, 2], "parameters": {"top_p": 0}})
    assert bad.status_code == 400 and bad.json()["error_type"] == "validation"
    unknown = httpx.post(url, timeout=30, json={"input_ids": [1, 2], "parameters": {"beam_width": 4}})
    assert unknown.status_code == 400 and "beam_width" in unknown.json()["error"]
    infer = httpx.post(f"{pair.predictor_url}/v2/models/{pair.model_name}/infer", timeout=30,
                       json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]})
    assert infer.status_code == 400 and "generate" in infer.json()["error"]


def test_the_openai_sdk_reads_our_errors(pair):
    import openai

    for base in ("/openai/v1", "/v1"):  # the prefixed routes and vLLM's
        client = openai.OpenAI(base_url=f"{pair.transformer_url}{base}", api_key="unused", timeout=60, max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="gpt-4", messages=QUESTION, max_tokens=4)
        assert missing.value.status_code == 404 and missing.value.type == "not_found" and missing.value.code == "404"
        # the SDK's message is the error's, not only "Error code: 404"
        assert missing.value.message == f"Error code: 404 - model 'gpt-4' is not served here; use {pair.model_name!r}"
        with pytest.raises(openai.BadRequestError) as bad:
            client.completions.create(model=pair.model_name, prompt="x", max_tokens=4, n=2)
        assert bad.value.type == "validation" and "'n' must be 1" in bad.value.message
    # kserve's routes keep the status table's body
    kserve = httpx.post(f"{pair.transformer_url}/v1/models/nope:predict", json={"instances": ["x"]}, timeout=30)
    assert kserve.status_code == 404 and set(kserve.json()) == {"error", "error_type"}


def test_vllm_routes_for_the_field_s_clients(pair):
    from openai import OpenAI

    health = httpx.get(f"{pair.transformer_url}/health", timeout=30)
    assert (health.status_code, health.content) == (200, b"")
    client = OpenAI(base_url=f"{pair.transformer_url}/v1", api_key="unused", timeout=300, max_retries=0)
    counted = transformer_requests_ok(pair)
    reply = client.chat.completions.create(model=pair.model_name, messages=QUESTION, max_tokens=8, temperature=0)
    assert transformer_requests_ok(pair) == counted + 1  # an inference route: counted as the prefixed ones
    prefixed = chat(pair, messages=QUESTION, max_tokens=8, temperature=0).json()
    assert reply.choices[0].message.content == prefixed["choices"][0]["message"]["content"]
    stream = client.completions.create(model=pair.model_name, prompt="The capital of France is", max_tokens=6,
                                       temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices)
    # GET /v1/models: OpenAI's list for OpenAI clients, kserve's v1 list for kserve's, in one answer
    assert [m.id for m in client.models.list()] == [pair.model_name]
    listed = httpx.get(f"{pair.transformer_url}/v1/models", timeout=30).json()
    assert listed["models"] == [pair.model_name] and listed["object"] == "list"
    ready = httpx.get(f"{pair.transformer_url}/v1/models/{pair.model_name}", timeout=30)  # kserve's v1 model status
    assert ready.status_code == 200 and ready.json()["ready"] is True


def transformer_requests_ok(pair) -> float:
    text = httpx.get(f"{pair.transformer_url}/metrics", timeout=30).text
    match = re.search(r'^snapserve_requests_total\{component="transformer",outcome="ok"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0
