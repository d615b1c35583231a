"""A request's own ``seed`` (issue 12): the same seed gives the same tokens, alone or beside other
requests in the running batch; another seed gives others; greedy is unchanged. The processor on real
tensors first, then the real predictor and transformer on SmolLM2-135M-Instruct."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch
from transformers.generation.continuous_batching.requests import FutureRequestState, RequestState

from predictor.generation import NO_SEED, SeededDraw, seeded_uniform

PROMPT = "Once upon a time, in a city by the sea, there lived"
TOKENS = 24  # at temperature 1, two seeds giving the same 24 tokens is practically impossible


def batch(*seeds, position: int = 10) -> list[FutureRequestState]:
    states = []
    for i, seed in enumerate(seeds):
        state = RequestState(f"r{i}", [1] * position, logit_processor_kwargs={} if seed is None else {"seed": seed})
        state.position_offset = position
        states.append(FutureRequestState(state, True, {}, position))
    return states


def draw(processor: SeededDraw, scores: torch.Tensor, requests: list) -> torch.Tensor:
    return processor(scores.clone(), processor.prepare_tensor_args(requests))


def test_a_seeded_row_keeps_one_allowed_token_and_an_unseeded_row_is_untouched():
    processor = SeededDraw()
    scores = torch.randn(3, 500)
    scores[2, 3:] = float("-inf")  # what top_k=3 leaves
    out = draw(processor, scores, batch(7, None, 7))
    assert torch.isfinite(out[0]).sum() == 1 and torch.isfinite(out[2]).sum() == 1
    assert int(torch.isfinite(out[2]).nonzero()) < 3  # a filtered token is never drawn
    assert torch.equal(out[1], scores[1])
    assert torch.equal(draw(processor, scores, batch(7, None, 7)), out)  # same seed, same position: same token
    # the whole-batch path an accelerator takes (no branch on the data) draws the same tokens
    assert torch.equal(SeededDraw.draw(scores, processor.prepare_tensor_args(batch(7, None, 7))), out)
    defaults = torch.empty(4, dtype=torch.int32)
    processor.fill_defaults(defaults)
    assert defaults.tolist() == [NO_SEED] * 4


def test_seeded_draws_follow_the_distribution():
    processor = SeededDraw()
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    scores = probs.log().expand(4000, 4).contiguous()
    requests = [fs for p in range(1000) for fs in batch(1, 2, 3, 4, position=p)]
    tokens = draw(processor, scores, requests).argmax(-1)
    counts = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert counts[3] == 0 and torch.allclose(counts[:3], probs[:3], atol=0.03), counts
    assert len({seeded_uniform(s, 5) for s in range(100)}) == 100
    assert seeded_uniform(-1, 5) == seeded_uniform(2**64 - 1, 5)  # a seed is taken modulo 2**64


def generate(pair, seed=None, temperature=1.0, prompt=PROMPT, max_tokens=TOKENS) -> list[int]:
    params = {"max_tokens": max_tokens, "temperature": temperature, "ignore_eos": True}
    if seed is not None:
        params["seed"] = seed
    answer = httpx.post(f"{pair.predictor_url}/v2/models/{pair.model_name}/generate", timeout=300,
                        json={"text_input": prompt, "parameters": params})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["output_ids"]) == max_tokens
    return answer.json()["output_ids"]


def test_the_same_seed_gives_the_same_tokens_alone_and_in_a_busy_batch(pair):
    alone = generate(pair, seed=1234)
    assert generate(pair, seed=1234) == alone
    running, done = [], threading.Event()

    def watch():
        while not done.is_set():
            running.append(pair.metric("snapserve_num_requests_running"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(5) as pool:
            jobs = [pool.submit(generate, pair, seed=1234), pool.submit(generate, pair, seed=4321),
                    pool.submit(generate, pair, seed=None, prompt="Write a poem about rain.", max_tokens=48),
                    pool.submit(generate, pair, seed=1234, prompt="Tell me about cats.", max_tokens=48),
                    pool.submit(generate, pair, seed=None)]
            same, other, *_ = [job.result() for job in jobs]
    finally:
        done.set()
        watcher.join()
    assert max(running) > 1, f"the requests never shared the running batch: {sorted(set(running))}"
    assert same == alone
    assert other != alone


def test_different_seeds_and_no_seed_give_different_tokens(pair):
    by_seed = [generate(pair, seed=s) for s in (1, 2, 3)]
    assert len({tuple(ids) for ids in by_seed}) == 3
    unseeded = [generate(pair) for _ in range(2)]
    assert unseeded[0] != unseeded[1]  # no seed: the engine's random stream


def test_greedy_ignores_the_seed_and_matches_model_generate(pair, reference):
    greedy, tokenizer = reference
    ids = tokenizer(PROMPT)["input_ids"]
    expected = greedy(ids, 12)
    plain = httpx.post(f"{pair.predictor_url}/v2/models/{pair.model_name}/generate", timeout=300,
                       json={"input_ids": ids, "parameters": {"max_tokens": 12, "temperature": 0}}).json()
    seeded = httpx.post(f"{pair.predictor_url}/v2/models/{pair.model_name}/generate", timeout=300,
                        json={"input_ids": ids, "parameters": {"max_tokens": 12, "temperature": 0, "seed": 9}}).json()
    assert plain["output_ids"] == seeded["output_ids"] == expected


def test_the_openai_chat_route_passes_the_seed_through(pair):
    def chat(seed: int) -> str:
        body = {"model": pair.model_name, "messages": [{"role": "user", "content": "Invent a name for a dragon."}],
                "max_tokens": TOKENS, "temperature": 1.0, "ignore_eos": True, "seed": seed}
        reply = httpx.post(f"{pair.transformer_url}/openai/v1/chat/completions", json=body, timeout=300)
        assert reply.status_code == 200, reply.text
        return reply.json()["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(3) as pool:
        first, again, other = pool.map(chat, (77, 77, 78))
    assert first == again
    assert first != other
