"""A request's own ``seed`` (issue 12): the same seed gives the same tokens, alone or beside other
requests in the running batch; another seed gives others; greedy is unchanged. The processor on real
tensors first, then the real predictor and transformer on SmolLM2-135M-Instruct."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch
from transformers.generation.continuous_batching.requests import FutureRequestState, RequestState

from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingLogitsProcessorList
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from predictor.generate.engine import GREEDY, NO_SEED, ChangedRowsOnly, Sampling, TokenDraw, add_draw, seeded_uniform

PROMPT = "Once upon a time, in a city by the sea, there lived"
TOKENS = 24  # at temperature 1, two seeds giving the same 24 tokens is practically impossible
VOCAB = 500


def batch(*kwargs, position: int = 10) -> list[FutureRequestState]:
    """Requests with a new token at ``position``; an int is a seed, None a sampled request without one, a
    dict the request's processor kwargs."""
    states = []
    for i, kw in enumerate(kwargs):
        kw = kw if isinstance(kw, dict) else {} if kw is None else {"seed": kw}
        state = RequestState(f"r{i}", [1] * position, logit_processor_kwargs=kw)
        state.position_offset = position
        states.append(FutureRequestState(state, True, {}, position))
    return states


def draw(processor: TokenDraw, scores: torch.Tensor, requests: list) -> torch.Tensor:
    return processor(scores.clone(), processor.prepare_tensor_args(requests))


def test_a_sampled_row_keeps_one_allowed_token_and_a_greedy_row_is_untouched():
    processor = TokenDraw()
    scores = torch.randn(4, VOCAB)
    scores[2, 3:] = float("-inf")  # what top_k=3 leaves
    scores[1, 5:] = float("-inf")
    requests = batch(7, None, 7, {"greedy": True, "seed": 7})  # a greedy row ignores its seed
    out = draw(processor, scores, requests)
    assert [int(torch.isfinite(row).sum()) for row in out[:3]] == [1, 1, 1]
    assert int(out[2].argmax()) < 3 and int(out[1].argmax()) < 5  # a filtered token is never drawn
    assert torch.equal(out[3], scores[3])  # the manager's argmax of the raw logits: generate's greedy token
    assert torch.equal(draw(processor, scores, requests)[[0, 2, 3]], out[[0, 2, 3]])  # same seed and position
    # the whole-batch path an accelerator takes (no branch on the data) draws the same seeded tokens
    assert torch.equal(TokenDraw.draw(scores, processor.prepare_tensor_args(requests))[[0, 2, 3]], out[[0, 2, 3]])
    defaults = torch.empty(4, dtype=torch.int32)
    processor.fill_defaults(defaults)
    assert defaults.tolist() == [GREEDY] * 4
    assert processor.prepare_tensor_args(batch(None))[0] == NO_SEED


def test_seeded_and_shared_draws_follow_the_distribution():
    processor = TokenDraw()
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    scores = probs.log().expand(4000, 4).contiguous()
    for seeds in ((1, 2, 3, 4), (None,) * 4):
        requests = [fs for p in range(1000) for fs in batch(*seeds, position=p)]
        tokens = draw(processor, scores, requests).argmax(-1)
        counts = torch.bincount(tokens, minlength=4).float() / len(tokens)
        assert counts[3] == 0 and torch.allclose(counts[:3], probs[:3], atol=0.03), (seeds, counts)
    assert len({seeded_uniform(s, 5) for s in range(100)}) == 100
    assert seeded_uniform(-1, 5) == seeded_uniform(2**64 - 1, 5)  # a seed is taken modulo 2**64


def library_processors() -> ContinuousBatchingLogitsProcessorList:
    """The list transformers builds for our engine's generation config (temperature, top-k, top-p)."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(0.5), TopKLogitsWarper(50), TopPLogitsWarper(0.9)])
    return ContinuousBatchingLogitsProcessorList(warpers, per_request_processors=True)


def run(processors: ContinuousBatchingLogitsProcessorList, scores: torch.Tensor, requests: list) -> torch.Tensor:
    args = torch.zeros(processors.tensors_required, 16, dtype=torch.int32)
    processors.fill_defaults(args)
    return processors(None, scores.clone(), processors.prepare_tensor_args(requests, args))


def test_greedy_rows_skip_the_library_processors_in_a_batch_with_seeded_and_sampled_rows():
    processors = library_processors()
    add_draw(processors)
    assert [type(p) for p in processors.logits_processor] == [ChangedRowsOnly] * 3 + [TokenDraw]
    assert processors.tensors_required == 4
    greedy = Sampling(max_tokens=1, temperature=0, seed=5).processor_kwargs(VOCAB)
    kwargs = [greedy, Sampling(1, temperature=0.7, top_k=20, top_p=0.8, seed=3).processor_kwargs(VOCAB), greedy,
              Sampling(1, temperature=1.3).processor_kwargs(VOCAB), Sampling(1, top_p=0.5, seed=9).processor_kwargs(VOCAB)]
    for kw in kwargs:
        processors.check_kwargs(kw)  # what the manager checks when a request is added
    scores = torch.randn(5, VOCAB) * 4
    requests = batch(*kwargs)
    out = run(processors, scores, requests)
    assert torch.equal(out[[0, 2]], scores[[0, 2]])  # greedy: raw, for the manager's argmax
    args = processors.prepare_tensor_args(requests, torch.zeros(4, 16, dtype=torch.int32))
    changed = [p.changes(args[i, :5], VOCAB).tolist() for i, p in enumerate(processors.logits_processor[:3])]
    assert changed == [[False, True, False, True, False],  # temperature
                       [False, True, False, False, False],  # top-k: sorts one row of five
                       [False, True, False, True, True]]  # top-p: at 1.0 it still masks tokens of probability 0
    assert [int(torch.isfinite(row).sum()) for row in out[[1, 3, 4]]] == [1, 1, 1]
    # the library's own processors over the whole batch, then the draw: the same seeded tokens and the
    # same greedy argmax (a greedy row's values leave the library's processors with nothing to change)
    reference = library_processors()
    reference.logits_processor.append(TokenDraw())
    reference.tensors_required += 1
    expected = run(reference, scores, requests)
    assert torch.equal(out.argmax(-1)[[0, 1, 2, 4]], expected.argmax(-1)[[0, 1, 2, 4]])
    assert out.argmax(-1)[[0, 2]].tolist() == scores.argmax(-1)[[0, 2]].tolist()


def generate(pair, seed=None, temperature=1.0, prompt=PROMPT, max_tokens=TOKENS) -> list[int]:
    params = {"max_tokens": max_tokens, "temperature": temperature, "ignore_eos": True}
    if seed is not None:
        params["seed"] = seed
    answer = httpx.post(f"{pair.predictor_url}/v2/models/{pair.model_name}/generate", timeout=300,
                        json={"text_input": prompt, "parameters": params})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["output_ids"]) == max_tokens
    return answer.json()["output_ids"]


@contextlib.contextmanager
def running_counts(pair):
    """The predictor's running-requests gauge, sampled while the block runs."""
    running, done = [], threading.Event()

    def watch():
        while not done.is_set():
            running.append(pair.metric("snapserve_num_requests_running"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield running
    finally:
        done.set()
        watcher.join()


def test_the_same_seed_gives_the_same_tokens_alone_and_in_a_busy_batch(pair):
    alone = generate(pair, seed=1234)
    assert generate(pair, seed=1234) == alone
    with running_counts(pair) as running, ThreadPoolExecutor(5) as pool:
        jobs = [pool.submit(generate, pair, seed=1234), pool.submit(generate, pair, seed=4321),
                pool.submit(generate, pair, seed=None, prompt="Write a poem about rain.", max_tokens=48),
                pool.submit(generate, pair, seed=1234, prompt="Tell me about cats.", max_tokens=48),
                pool.submit(generate, pair, seed=None)]
        same, other, *_ = [job.result() for job in jobs]
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


def test_greedy_beside_sampled_and_seeded_requests_matches_model_generate(pair, reference):
    greedy, tokenizer = reference
    ids = tokenizer(PROMPT)["input_ids"]
    expected = greedy(ids, TOKENS)

    def plain() -> list[int]:
        return httpx.post(f"{pair.predictor_url}/v2/models/{pair.model_name}/generate", timeout=300,
                          json={"input_ids": ids, "parameters": {"max_tokens": TOKENS, "temperature": 0}}).json()[
                              "output_ids"]

    with running_counts(pair) as running, ThreadPoolExecutor(4) as pool:
        others = [pool.submit(generate, pair, seed=seed, prompt="Write a poem about rain.", max_tokens=48)
                  for seed in (None, 11)]
        answers = [pool.submit(plain) for _ in range(2)]
        for job in others:
            job.result()
        answers = [job.result() for job in answers]
    assert max(running) > 2, f"the greedy requests never shared the batch: {sorted(set(running))}"
    assert answers == [expected, expected]


def test_a_seeded_draw_survives_the_rounding_of_another_batch():
    """The same request in another batch gets its logits computed in other shapes, a few ulps apart: its
    seeded token must not move (CI once saw it move with an inverse-CDF draw over the 49k-token vocab)."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 49152, generator=gen) * 3
    nudged = scores * (1 + 1e-6 * torch.randn(scores.shape, generator=gen))
    keys = torch.tensor([seeded_uniform(1234, position) for position in range(64)], dtype=torch.int32)
    picked, again = (TokenDraw.draw(s, keys).argmax(-1) for s in (scores, nudged))
    assert (picked == again).float().mean() >= 0.98, (picked != again).sum()
