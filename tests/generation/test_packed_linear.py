"""oneDNN-packed Linear layers on a CPU (predictor/generate/packed.py, ``--generate_linear packed``, the default).

In-process, no servers. The kernel sums in another order than MKL's ``F.linear``, so its outputs are held to
float rounding, not bit equality; on the real SmolLM2 snapshot, greedy tokens and perplexity are held to the
weights' own through the reduced-precision gate's measure, at bounds far tighter than bf16's or int8's.
The engine's greedy tokens against ``generate`` are held by the pair's tests, which run the default.
"""

from __future__ import annotations

import copy

import pytest
import torch

from predictor.generate import packed, quantize

pytestmark = pytest.mark.skipif(not packed.available(), reason="this torch build has no oneDNN")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 576), (7, 576), (32, 576), (1, 5, 576)])
@pytest.mark.parametrize("bias", [False, True])
def test_a_packed_linear_gives_f_linear_s_outputs_to_rounding(dtype, shape, bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 192, bias=bias).to(dtype)
    x = torch.randn(*shape).to(dtype)
    with torch.inference_mode():
        want = torch.nn.functional.linear(x.double(), linear.weight.double(),
                                          None if linear.bias is None else linear.bias.double())
        got = packed.PackedLinear(linear)(x)
        stock = linear(x)
    assert got.shape == stock.shape and got.dtype == dtype
    err, stock_err = (got.double() - want).abs().max().item(), (stock.double() - want).abs().max().item()
    print(f"{dtype} {shape} bias={bias}: max |packed - fp64| {err:.1e}, |F.linear - fp64| {stock_err:.1e}")
    # 576 products summed: fp32 rounding is ~1e-5 here; bf16 rounds its output to 8 bits of mantissa
    assert err <= (1e-4 if dtype == torch.float32 else 0.1 * want.abs().max().item() / 2 ** 4)


def test_apply_swaps_only_plain_linear_layers():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()),
                                torch.nn.Embedding(10, 8))
    int8 = torch.ao.nn.quantized.dynamic.Linear(8, 8)
    model.append(int8)
    assert packed.apply(model) == 2
    assert [type(m) for m in (model[0], model[1][0])] == [packed.PackedLinear] * 2
    assert model[3] is int8 and isinstance(model[2], torch.nn.Embedding)


@pytest.fixture(scope="module")
def fp32(gen_dir):
    import transformers

    torch.set_num_threads(2)
    return transformers.AutoModelForCausalLM.from_pretrained(gen_dir, dtype=torch.float32,
                                                             local_files_only=True).eval()


def test_the_real_model_packed_keeps_its_greedy_tokens_and_perplexity(fp32, gen_dir):
    """The tolerance, stated: the packed model against the same weights through ``F.linear``, on the gate's 8
    fixed prompts x 32 greedy tokens and its fixed text. A near-tie may flip a token (a rounding in the last
    bit decides it), so 7 of 8 prompts must match in full and the mean share of identical tokens before a
    first divergence be at least 0.9; the perplexity may move by 0.1% (bf16's gate allows 5%)."""
    from transformers import AutoTokenizer

    candidate = copy.deepcopy(fp32)
    swapped = packed.apply(candidate)
    gate = quantize.measure(fp32, candidate, AutoTokenizer.from_pretrained(gen_dir))
    print(f"packed against F.linear ({swapped} layers): {gate.figures()}")
    assert swapped == 7 * fp32.config.num_hidden_layers + 1  # q, k, v, o, gate, up, down a layer; the LM head
    assert gate.exact >= gate.prompts - 1 and gate.agreement >= 0.9, gate.figures()
    assert abs(gate.perplexity_ratio - 1) <= 1e-3, gate.figures()
    assert type(fp32.lm_head) is torch.nn.Linear  # the copy was packed, not the model


def test_the_engine_packs_on_a_cpu_unless_told_not_to(gen_dir):
    from predictor.generate.engine import GenerationEngine
    from predictor.generate.settings import GenerateSettings
    from snapserve import metadata

    info = metadata.read(gen_dir)
    for linear, want in (("packed", "oneDNN packed (211)"), ("library", "torch")):
        engine = GenerationEngine(gen_dir, info, GenerateSettings(linear=linear), "cpu", "float32", 2)
        assert engine.describe()["linear"] == want
        assert (type(engine.model.lm_head).__name__ == "PackedLinear") == (linear == "packed")
