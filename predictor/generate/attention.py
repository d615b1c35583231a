"""Attention for transformers' continuous batching that costs what each request reads, not what the batch reads.

Without flash attention (every CPU, and a GPU without the flash-attn kernels), continuous batching runs
``sdpa`` over the whole batch at once: the queries of every request against the keys of every request, with
a mask that keeps each to its own. Its cost grows with the square of the batch: at 32 running requests of
~100 tokens each, every query scores 3,200 keys to keep 100, and that was most of a decode step on a 2-core
CPU. This function takes the same arguments the library gives flash attention (``cu_seq_lens_q`` and
``cu_seq_lens_k``, no mask) and attends per request:

- requests with one new token (decode) in one ``scaled_dot_product_attention`` call, their keys gathered
  into a padded ``[requests, kv_heads, longest, head_dim]`` block, the query heads that share a key head
  laid along the query axis (no copy of the keys per query head);
- a request with several new tokens (a prompt, or the rest of one after a shared prefix) on its own, causal
  from the bottom right (its queries are the last of its keys).

The plan (which rows, which gather index, which mask) depends only on the batch's lengths, so it is built
once per step and reused by every layer. Registered with transformers' ``AttentionInterface`` and switched
in by ``GenerationEngine`` after ``init_continuous_batching`` (whose check only knows the library's names);
with it, the library builds no ``[batch tokens x keys]`` mask either.
"""

from __future__ import annotations

import dataclasses
import weakref

import torch
import torch.nn.functional as F

NAME = "snapserve_varlen"


@dataclasses.dataclass(frozen=True)
class Plan:
    decode_rows: torch.Tensor | None  # [n] query rows of the one-token requests
    gather: torch.Tensor | None  # [n * longest] key rows, padded with each request's first key
    mask: torch.Tensor | None  # [n, 1, 1, longest] additive, None when every request has the same length
    longest: int
    spans: tuple[tuple[int, int, int, int], ...]  # (q start, q end, k start, k end) of multi-token requests
    single: tuple[int, int] | None = None  # (k start, k end) when the batch is one request's one new token


_plans: dict[tuple, Plan] = {}


def plan_for(cu_q: list[int], cu_k: list[int], device: torch.device, dtype: torch.dtype) -> Plan:
    """The per-request plan for a batch with cumulative query and key lengths ``cu_q`` and ``cu_k``."""
    key = (tuple(cu_q), tuple(cu_k), device, dtype)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    decode, spans = [], []
    for i in range(len(cu_q) - 1):
        qs, qe, ks, ke = cu_q[i], cu_q[i + 1], cu_k[i], cu_k[i + 1]
        if qe == qs:  # padding (an empty sequence)
            continue
        if qe - qs == 1:
            decode.append((qs, ks, ke))
        else:
            spans.append((qs, qe, ks, ke))
    rows = gather = mask = None
    longest = max((ke - ks for _, ks, ke in decode), default=0)
    if decode:
        rows = torch.tensor([qs for qs, _, _ in decode], dtype=torch.long, device=device)
        index = [ks + min(j, ke - ks - 1) for _, ks, ke in decode for j in range(longest)]
        gather = torch.tensor(index, dtype=torch.long, device=device)
        if any(ke - ks != longest for _, ks, ke in decode):
            valid = torch.tensor([[j < ke - ks for j in range(longest)] for _, ks, ke in decode], device=device)
            mask = torch.zeros(valid.shape, dtype=dtype, device=device).masked_fill_(~valid, float("-inf"))
            mask = mask.view(len(decode), 1, 1, longest)
    single = (decode[0][1], decode[0][2]) if len(decode) == 1 and not spans else None
    plan = Plan(rows, gather, mask, longest, tuple(spans), single)
    if len(_plans) > 64:  # one step's plan is reused by its layers; older steps' plans are garbage
        _plans.clear()
    _plans[key] = plan
    return plan


_last: list = [None, None, None]  # weak references to the step's (cu_q, cu_k), and its plan


def _last_step(cu_q: torch.Tensor, cu_k: torch.Tensor, query: torch.Tensor) -> Plan:
    """The plan of this step: the first layer reads the lengths (on a GPU, a sync), the others find it by the
    identity of the tensors the library hands every layer of a step. Weak references: a freed tensor's id may
    come back, a dead reference never matches, and the library's tensors do not outlive its engine (a strong
    reference held at interpreter exit aborted the process once a second engine had run)."""
    if _last[0] is not None and _last[0]() is cu_q and _last[1]() is cu_k:
        return _last[2]
    plan = plan_for(cu_q.tolist(), cu_k.tolist(), query.device, query.dtype)
    _last[:] = [weakref.ref(cu_q), weakref.ref(cu_k), plan]
    return plan


def forget() -> None:
    """Drop the plans (an engine stopping): they hold index tensors of its last batches."""
    _last[:] = [None, None, None]
    _plans.clear()


def varlen_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                     scaling: float | None = None, dropout: float = 0.0, **kwargs) -> tuple[torch.Tensor, None]:
    """``query`` [1, heads, q tokens, dim]; ``key``/``value`` [1, kv heads, k tokens, dim] (every request's keys
    one after the other, as the paged cache returns them). Returns [1, q tokens, heads, dim], like flash."""
    cu_q, cu_k = kwargs["cu_seq_lens_q"], kwargs["cu_seq_lens_k"]
    heads, tokens, dim = query.shape[1], query.shape[2], query.shape[3]
    kv_heads = key.shape[1]
    group = heads // kv_heads
    plan = _last_step(cu_q, cu_k, query)
    if plan.single is not None and tokens == 1:  # one request, one new token (a lone stream's step): no gather, no copy back
        ks, ke = plan.single
        q = query[0].reshape(kv_heads, group, dim).unsqueeze(0)  # [1, kv heads, group, dim]
        o = F.scaled_dot_product_attention(q, key[:, :, ks:ke], value[:, :, ks:ke], scale=scaling)
        return o.reshape(1, 1, heads, dim), None
    out = query.new_empty(tokens, heads, dim)
    if plan.decode_rows is not None:
        n, longest = plan.decode_rows.numel(), plan.longest
        q = query[0].index_select(1, plan.decode_rows)  # [heads, n, dim]
        q = q.view(kv_heads, group, n, dim).permute(2, 0, 1, 3)  # [n, kv heads, group, dim]
        k = key[0].index_select(1, plan.gather).view(kv_heads, n, longest, dim).transpose(0, 1)
        v = value[0].index_select(1, plan.gather).view(kv_heads, n, longest, dim).transpose(0, 1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, scale=scaling)  # [n, kv heads, group, dim]
        out.index_copy_(0, plan.decode_rows, o.reshape(n, heads, dim))
    for qs, qe, ks, ke in plan.spans:
        q = query[:, :, qs:qe]
        k, v = key[:, :, ks:ke], value[:, :, ks:ke]
        if group > 1:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if qe - qs == ke - ks:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling)
        else:  # the queries are the last qe - qs of the keys: causal from the bottom right
            allowed = torch.ones(qe - qs, ke - ks, dtype=torch.bool, device=q.device).tril_(ke - ks - (qe - qs))
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling)
        out[qs:qe] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


def register() -> str:
    """Register the function with transformers (idempotent); returns its name for ``set_attn_implementation``."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)
    return NAME


def applies(config) -> bool:
    """Whether this attention can serve ``config`` under continuous batching: full attention in every layer
    (no sliding window, no attention sinks), and the library did not pick a flash kernel."""
    impl = str(getattr(config, "_attn_implementation", "") or "")
    if "flash" in impl:
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    layer_types = getattr(config, "layer_types", None) or ()
    return all(t == "full_attention" for t in layer_types)
