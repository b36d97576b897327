"""Parameter and MAC counts of a network (spec section 1.5); the command
``semiseg3d complexity`` is :mod:`semiseg3d.reporting.complexity`.

Two MAC figures, both for a batch of one:

- **true**: :class:`torch.utils.flop_counter.FlopCounterMode` FLOPs / 2 (convolutions and
  transposed convolutions at their real cost; everything else free).
- **legacy**: the older thop-style rule that the paper's tables use. Per call of a leaf
  module: a (transposed) convolution costs ``out_elements x C_in / groups x prod(kernel)``,
  plus ``out_elements`` more when it has a bias; a transposed convolution is thus charged
  as if each output voxel saw the whole kernel (8x its true cost for kernel 2, stride 2);
  BatchNorm costs ``2 x elements``; ReLU, dropout, additions and the rest cost nothing.
  It reproduces the paper's 47.10 G (112x112x80) and 41.53 G (96^3) for the V-Net.

Both counts run the model on the ``meta`` device (shapes only, no arithmetic), so they are
instant at any patch size and leave the model's own weights, buffers and mode untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from semiseg3d.errors import InputError
from semiseg3d.models.blocks import DIVISOR
from semiseg3d.models.modes import eval_mode

__all__ = [
    "count_params",
    "true_macs",
    "legacy_macs",
    "check_patch",
]


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (all of them; every parameter here is trainable)."""
    return sum(p.numel() for p in model.parameters())


def check_patch(patch: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(int(s) for s in patch)
    if len(dims) != 3 or any(s <= 0 or s % DIVISOR for s in dims):
        raise InputError(
            f"patch {' '.join(map(str, dims))}: need three sizes, each a positive multiple of "
            f"{DIVISOR}"
        )
    return dims  # type: ignore[return-value]


def _in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            return m.in_channels
    raise ValueError("model has no Conv3d layer to take the input channel count from")


def _meta_forward(model: nn.Module, patch: Sequence[int]) -> None:
    """Run ``model`` in eval mode on a meta-device batch of one, with meta copies of its
    parameters and buffers (the model itself is not modified)."""
    dims = check_patch(patch)
    state = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    x = torch.empty(1, _in_channels(model), *dims, device="meta")
    with eval_mode(model), torch.no_grad():
        functional_call(model, state, (x,))


def true_macs(model: nn.Module, patch: Sequence[int]) -> int:
    """True multiply-accumulates of one forward pass, batch 1: FlopCounterMode FLOPs / 2.

    Args:
        model: any network here (subnet or dual).
        patch: spatial input size (X, Y, Z), voxels, each a multiple of 16.

    Raises:
        InputError: when ``patch`` is not three positive multiples of 16.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        _meta_forward(model, patch)
    return counter.get_total_flops() // 2


def _legacy_ops(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        if module.bias is not None:
            per_output += 1
        return output.numel() * per_output
    if isinstance(module, nn.BatchNorm3d):
        return 2 * inputs[0].numel()
    return 0


def legacy_macs(model: nn.Module, patch: Sequence[int]) -> int:
    """MACs by the legacy thop-style rule of the paper's tables (module docstring), batch 1;
    arguments and errors as for :func:`true_macs`."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _legacy_ops(module, inputs, output)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv3d | nn.ConvTranspose3d | nn.BatchNorm3d)
    ]
    try:
        _meta_forward(model, patch)
    finally:
        for h in handles:
            h.remove()
    return total
