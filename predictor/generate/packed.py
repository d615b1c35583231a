"""``--generate_linear packed``: the decode step's Linear layers on a CPU through oneDNN with prepacked weights.

A decode step is some 200 matrix-vector products (7 a layer, and the LM head) over every weight byte. torch's
``F.linear`` hands a 1-row product to MKL, which runs it on one thread: on the 2-core AMD EPYC (Zen 4) the 210
linears of SmolLM2-135M took 37 ms in fp32 and 18 ms in bf16, and the tied LM head 10 ms in fp32. The same
products through oneDNN with the weights reordered once into its blocked layout (what torch.compile's
inductor does on a CPU with ``freezing``: ``mkldnn._reorder_linear_weight`` at compile time,
``mkldnn._linear_pointwise`` per call) took 26.5 ms, 14.6 ms and 5.4 ms; at 32 rows, 49 ms against 73 (fp32).

Only ``torch.nn.Linear`` modules are swapped (int8 modules stay). The reordered weight replaces the module's
own (the tied LM head gets a copy; the embedding keeps its table). Outputs agree with ``F.linear`` to float
rounding (oneDNN sums in another order): ``tests/generation/test_packed_linear.py`` holds that tolerance.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("snapserve.predictor")


def available() -> bool:
    """oneDNN is in this torch build, and its linear ops with it."""
    return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(torch.nn.Module):
    """A Linear layer whose weight oneDNN reordered once; the same inputs, outputs and dtype."""

    def __init__(self, linear: torch.nn.Linear, rows_hint: int = 1):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # an opaque oneDNN tensor, kept out of parameters() and state_dict (the module is for inference only)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}, oneDNN"


def apply(model: torch.nn.Module) -> int:
    """Swap every ``torch.nn.Linear`` of a CPU model for a ``PackedLinear``; returns how many (0: left alone)."""
    if not available():
        log.info("generate: oneDNN is not in this torch build; the Linear layers stay on torch's own kernels")
        return 0
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child.weight.device.type == "cpu":
                setattr(module, name, PackedLinear(child))
                swapped += 1
    return swapped
