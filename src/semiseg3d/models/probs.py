"""Probability functions: how a method's networks turn an input patch into class
probabilities (its inference rule, :meth:`semiseg3d.methods.base.Method.prob_fn`).

A :data:`ProbFn` maps (B, 1, px, py, pz) input patches to (B, C, px, py, pz) class
probabilities; sliding-window inference (:mod:`semiseg3d.inference.sliding_window`) calls
it on batches of windows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["ProbFn", "softmax_ensemble", "mean_head_softmax", "sigmoid_head"]

#: (B, 1, px, py, pz) input patches -> (B, C, px, py, pz) class probabilities.
ProbFn = Callable[[torch.Tensor], torch.Tensor]


def softmax_ensemble(models: Sequence[nn.Module]) -> ProbFn:
    """A probability function: the mean over ``models`` of softmax(logits) over classes.

    Each model maps (B, 1, px, py, pz) to ``(logits (B, C, px, py, pz), features)`` (a plain
    logits tensor is accepted too). For the dual network pass ``[dual.resnet, dual.vnet]``
    (the paper's test ensemble, spec 6.1) or a single subnet. The caller puts the models
    in eval mode. The softmax is taken in float32, also under autocast.

    Args:
        models: one or more segmentation networks.

    Returns:
        ``fn(x) -> probs`` with probs (B, C, px, py, pz) float32.
    """
    members = list(models)
    if not members:
        raise ValueError("softmax_ensemble needs at least one model")

    def prob_fn(x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for model in members:
            out = model(x)
            logits = out[0] if isinstance(out, tuple | list) else out
            probs = torch.softmax(logits.float(), dim=1)
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(members)

    return prob_fn


def mean_head_softmax(net: nn.Module) -> ProbFn:
    """The mean softmax over the heads of one network whose forward returns one logits
    tensor (B, C, px, py, pz) per head (MC-Net's decoders, URPC's pyramid heads)."""

    def prob_fn(x: torch.Tensor) -> torch.Tensor:
        outs = net(x)
        return sum(torch.softmax(z.float(), dim=1) for z in outs) / len(outs)

    return prob_fn


def sigmoid_head(net: nn.Module) -> ProbFn:
    """``(1 - sigma(z), sigma(z))`` of the first output of ``net``, a one-channel logit
    (B, 1, px, py, pz) (DTC's and SASSNet's segmentation head)."""

    def prob_fn(x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(net(x)[0].float())
        return torch.cat([1.0 - p, p], dim=1)

    return prob_fn
