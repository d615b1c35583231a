"""A tiny randomly initialised Qwen2ForCausalLM snapshot, built here, served end to end (plumbing
only: its words mean nothing). Its own pair holds one request at a time, to show the 429."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from snapserve import snapshot
from tests.generation.conftest import start_pair

NAME = "tiny-qwen2"


@pytest.fixture(scope="module")
def tiny(gen_dir, tmp_path_factory):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    src = tmp_path_factory.mktemp("tiny-qwen2-src")
    for name in ("tokenizer.json", "tokenizer_config.json"):  # a ChatML tokenizer and template, as Qwen2 has
        shutil.copyfile(gen_dir / name, src / name)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=2, bos_token_id=1, pad_token_id=2, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(src)
    out = tmp_path_factory.mktemp("tiny-qwen2")
    snapshot.export(src, out)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    predictor, transformer = start_pair(out, tmp_path_factory.mktemp("tiny-logs"), NAME, predictor_extra=[
        "--max_queue_requests", "1", "--max_new_tokens", "300", "--kv_blocks", "16", "--kv_page_size", "32"])
    yield predictor.url, transformer.url
    transformer.stop()
    predictor.stop()


def test_qwen2_chat_end_to_end(tiny):
    _, transformer = tiny
    body = {"model": NAME, "messages": [{"role": "user", "content": "안녕 😀"}], "max_tokens": 6, "ignore_eos": True}
    reply = httpx.post(f"{transformer}/openai/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["choices"][0]["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == 6
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    with httpx.stream("POST", f"{transformer}/openai/v1/completions", timeout=120,
                      json={"model": NAME, "prompt": "hello", "max_tokens": 4, "ignore_eos": True,
                            "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200 and lines[-1] == "data: [DONE]"


def test_max_tokens_is_capped_at_the_flag(tiny):
    predictor, _ = tiny
    answer = httpx.post(f"{predictor}/v2/models/{NAME}/generate", timeout=120, json={
        "input_ids": [1, 2, 3], "parameters": {"max_tokens": 5000, "ignore_eos": True}}).json()
    assert len(answer["output_ids"]) == 300 and answer["finish_reason"] == "length"


def test_a_prompt_longer_than_the_context_is_422(tiny):
    predictor, transformer = tiny
    direct = httpx.post(f"{predictor}/v2/models/{NAME}/generate", timeout=60, json={"input_ids": [5] * 600})
    assert direct.status_code == 422 and "600 tokens" in direct.json()["error"]
    relayed = httpx.post(f"{transformer}/openai/v1/completions", timeout=60,
                         json={"model": NAME, "prompt": "hello " * 600, "max_tokens": 2})
    assert relayed.status_code == 422 and relayed.json()["error"]["type"] == "unprocessable"  # OpenAI's shape


def test_a_full_queue_answers_429_with_retry_after(tiny):
    predictor, transformer = tiny
    # the queue holds one request: while one stream of 300 tokens runs, every other request is refused
    with httpx.stream("POST", f"{predictor}/v2/models/{NAME}/generate_stream", timeout=120,
                      json={"input_ids": [1, 2, 3], "parameters": {"max_tokens": 300, "ignore_eos": True}}) as held:
        assert held.status_code == 200
        refused = httpx.post(f"{transformer}/openai/v1/chat/completions", timeout=60, json={
            "model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        direct = httpx.post(f"{predictor}/v2/models/{NAME}/generate", timeout=60,
                            json={"input_ids": [1, 2], "parameters": {"max_tokens": 2}})
    for response in (refused, direct):
        assert response.status_code == 429, response.text
        error = response.json()["error"]  # OpenAI's shape on the transformer's OpenAI route, the table's on the predictor
        assert (error["type"] if response is refused else response.json()["error_type"]) == "overloaded"
        assert int(response.headers["retry-after"]) >= 1
