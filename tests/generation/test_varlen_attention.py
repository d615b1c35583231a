"""snapserve's per-request attention under continuous batching (predictor/generate/attention.py).

In-process, no servers: first the function against a dense masked ``sdpa`` on random tensors (decode rows of
several lengths, a whole prompt, the rest of a prompt after a shared prefix); then the real engine on the
real SmolLM2 snapshot, several greedy requests at once, with prompts long enough to be prefilled over
several steps and sharing a prefix, each token for token equal to transformers' own ``generate``.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from predictor.generate import attention
from predictor.generate.attention import varlen_attention

HEADS, KV_HEADS, DIM = 9, 3, 64


def dense_reference(q, k, v, lens, scale):
    """Every query against every key, a mask keeping each request to its own keys, causal from the bottom right."""
    cu_q = [0, *torch.tensor([ql for ql, _ in lens]).cumsum(0).tolist()]
    cu_k = [0, *torch.tensor([kl for _, kl in lens]).cumsum(0).tolist()]
    mask = torch.full((cu_q[-1], cu_k[-1]), float("-inf"))
    for i, (ql, kl) in enumerate(lens):
        for a in range(ql):
            mask[cu_q[i] + a, cu_k[i]: cu_k[i] + a + kl - ql + 1] = 0
    group = q.shape[1] // k.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), attn_mask=mask, scale=scale)
    return out.transpose(1, 2), cu_q, cu_k


@pytest.mark.parametrize("lens", [
    [(1, 17), (1, 40), (1, 1), (1, 40)],  # decode only, lengths differ: padded and masked
    [(1, 8), (1, 8)],  # decode only, one length: no mask
    [(1, 23)],  # one request's one new token: no gather
    [(5, 5), (3, 10), (1, 33), (7, 7)],  # whole prompts, a prompt's rest after a prefix, a decode row
])
def test_per_request_attention_equals_the_dense_masked_one(lens):
    torch.manual_seed(0)
    q = torch.randn(1, HEADS, sum(ql for ql, _ in lens), DIM)
    k, v = (torch.randn(1, KV_HEADS, sum(kl for _, kl in lens), DIM) for _ in range(2))
    ref, cu_q, cu_k = dense_reference(q, k, v, lens, 0.125)
    out, weights = varlen_attention(None, q, k, v, None, scaling=0.125,
                                    cu_seq_lens_q=torch.tensor(cu_q, dtype=torch.int32),
                                    cu_seq_lens_k=torch.tensor(cu_k, dtype=torch.int32))
    assert weights is None and out.shape == ref.shape
    err = (out - ref).abs().max().item()
    print(f"lens {lens}: max |varlen - dense| = {err:.2e}")
    assert err < 1e-5  # float32 sums in another order


def test_one_decode_row_in_a_padded_batch():
    """Compiled or CUDA-graph steps pad the query to a size class (the library's ``pad_inputs``): one request's
    one new token then arrives with padding rows behind it, and must not take the no-copy path that assumes a
    one-token query (it failed with "shape '[3, 3, 64]' is invalid for input of size 36864")."""
    torch.manual_seed(0)
    q = torch.randn(1, HEADS, 4, DIM)  # 1 real row, 3 of padding
    k, v = (torch.randn(1, KV_HEADS, 23, DIM) for _ in range(2))
    ref, _, _ = dense_reference(q[:, :, :1], k, v, [(1, 23)], 0.125)
    out, _ = varlen_attention(None, q, k, v, None, scaling=0.125,
                              cu_seq_lens_q=torch.tensor([0, 1, 1], dtype=torch.int32),
                              cu_seq_lens_k=torch.tensor([0, 23, 23], dtype=torch.int32))
    assert out.shape == (1, 4, HEADS, DIM)
    assert (out[:, :1] - ref).abs().max().item() < 1e-5


def test_it_steps_aside_for_sliding_windows_and_flash():
    class Config:
        _attn_implementation = "sdpa"
        layer_types = ("full_attention",) * 4

    assert attention.applies(Config())
    sliding = type("Sliding", (Config,), {"layer_types": ("full_attention", "sliding_attention")})
    assert not attention.applies(sliding())
    assert not attention.applies(type("Flash", (Config,), {"_attn_implementation": "flash_attention_2"})())
    assert not attention.applies(type("Mistral", (Config,), {"sliding_window": 4096})())
    qwen = type("Qwen2", (Config,), {"sliding_window": 4096, "use_sliding_window": False})
    assert attention.applies(qwen())


@pytest.fixture(scope="module")
def engine(gen_dir):
    from predictor.generate.engine import GenerationEngine
    from predictor.generate.settings import GenerateSettings
    from snapserve import metadata

    # 64 tokens a forward pass: the longer prompts are prefilled over several steps, their later chunks
    # attending to keys written by the earlier ones (queries fewer than keys)
    settings = GenerateSettings(max_batch_tokens=64)
    engine = GenerationEngine(gen_dir, metadata.read(gen_dir), settings, "cpu", "float32", 2)
    engine.start()
    yield engine
    asyncio.run(engine.stop(10))


def test_the_engine_uses_it(engine):
    assert engine.describe()["attention"] == attention.NAME


def test_concurrent_greedy_requests_equal_generate_token_for_token(engine, reference):
    from predictor.generate.engine import Sampling

    greedy, tokenizer = reference
    system = tokenizer.encode("You are a careful assistant who answers in full sentences. " * 6)
    prompts = [system + tokenizer.encode(f"Question {i}: name a colour and a number.") for i in range(3)]
    prompts += [tokenizer.encode("Count: one, two, three,"), tokenizer.encode("The capital of France is")]

    async def one(ids):
        tokens = []
        async for delta in engine.generate(ids, Sampling(max_tokens=12, temperature=0, ignore_eos=True)):
            tokens += delta.token_ids
        return tokens

    async def all_at_once():
        return await asyncio.gather(*(one(ids) for ids in prompts))

    got = asyncio.run(all_at_once())
    for ids, tokens in zip(prompts, got, strict=True):
        expected = greedy(ids, 12)  # it may stop at EOS, where the engine (ignore_eos) goes on
        print(len(ids), "prompt tokens ->", tokens)
        assert len(tokens) == 12 and tokens[: len(expected)] == expected


def test_a_shared_system_prompt_is_not_prefilled_again(engine, reference):
    from predictor.generate.engine import Sampling
    from snapserve import metrics

    greedy, tokenizer = reference
    system = tokenizer.encode("You answer questions about numbers, briefly and exactly. " * 16)[:200]
    page = engine.page_size

    async def one(ids):
        return [t async for delta in engine.generate(ids, Sampling(max_tokens=6, temperature=0, ignore_eos=True))
                for t in delta.token_ids]

    first = asyncio.run(one(system + tokenizer.encode("What is two plus two?")))
    hits = metrics.GEN_PREFIX_HITS._value.get()
    ids = system + tokenizer.encode("What is three plus three?")
    second = asyncio.run(one(ids))
    found = metrics.GEN_PREFIX_HITS._value.get() - hits
    print(f"second request: {found} of {len(ids)} prompt tokens found among the shared blocks ({page} a block)")
    assert found >= (len(system) // page) * page  # every whole block of the shared system prompt
    expected = greedy(ids, 6)
    assert second[: len(expected)] == expected and len(first) == 6


def test_prefix_sharing_is_a_setting():
    from predictor.generate.settings import GenerateSettings

    assert GenerateSettings().resolved(False)["allow_block_sharing"] is True
    assert GenerateSettings(prefix_sharing=False).resolved(False)["allow_block_sharing"] is False
