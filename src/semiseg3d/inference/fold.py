"""Fold eval-mode BatchNorm into the convolution before it (inference only).

In eval mode ``BatchNorm3d`` is a fixed per-channel affine map, so ``BN(conv(x))`` equals a
single convolution with rescaled weights and a shifted bias. Folding removes one pass over
every activation map of the network, which matters on a CPU, where these maps are
memory-bound. The weights are computed by PyTorch's own
:func:`torch.nn.utils.fusion.fuse_conv_bn_eval` (Conv3d and ConvTranspose3d).

The result equals the original up to float rounding (about 1e-6 relative in float32), so
it can flip the argmax of a voxel whose two class probabilities are within rounding of each
other. ``semiseg3d test`` / ``predict`` therefore use it only on the fast (bf16) path
(:func:`semiseg3d.evaluation.test_run.prepared_rule`); the float32 path stays the bit-for-bit
reference.

Which pairs are folded: consecutive ``(conv, BatchNorm3d)`` children of any
``nn.Sequential`` (ConvBlock, Down, Up, shortcuts), and the named pairs a module lists in a
``conv_bn_pairs`` class attribute (the ResNet-34 blocks, whose forward is not a Sequential).
Anything else is left as it is (still correct, just not folded).
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "count_batchnorm"]

_CONVS = (nn.Conv3d, nn.ConvTranspose3d)


def _fused(conv: nn.Module, bn: nn.Module) -> nn.Module | None:
    """The folded convolution, or None when the pair cannot be folded."""
    if not isinstance(conv, _CONVS) or not isinstance(bn, nn.BatchNorm3d):
        return None
    if bn.running_mean is None or bn.running_var is None or bn.num_features != conv.out_channels:
        return None
    return fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose3d))


def _fold_in_place(module: nn.Module) -> None:
    for child in module.children():
        _fold_in_place(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            fused = _fused(module._modules[first], module._modules[second])
            if fused is not None:
                module._modules[first] = fused
                module._modules[second] = nn.Identity()
    for conv_name, bn_name in getattr(module, "conv_bn_pairs", ()):
        fused = _fused(getattr(module, conv_name), getattr(module, bn_name))
        if fused is not None:
            setattr(module, conv_name, fused)
            setattr(module, bn_name, nn.Identity())


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` with each foldable BatchNorm3d folded into its conv.

    Args:
        net: a network (left unchanged; its BatchNorm running statistics are used).

    Returns:
        A new module in eval mode on the same device; folded weights are fresh contiguous
        tensors (convert the copy if channels-last weights are wanted).
    """
    model = copy.deepcopy(net).eval()
    _fold_in_place(model)
    return model


def count_batchnorm(net: nn.Module) -> int:
    """Number of BatchNorm3d modules left in ``net`` (0 after folding VNet / ResNet-34)."""
    return sum(isinstance(m, nn.BatchNorm3d) for m in net.modules())
