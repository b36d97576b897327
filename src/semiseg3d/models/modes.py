"""Train / eval mode switches for a block of code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(module: nn.Module, *, frozen: bool = False) -> Iterator[None]:
    """``module`` and every submodule in eval mode inside the block; each one's own mode
    (and, with ``frozen``, each parameter's ``requires_grad``) restored after.

    Args:
        module: any network.
        frozen: also mark every parameter as not requiring gradients, so a forward inside
            the block records no graph edge to them: a later backward through its output
            reaches the inputs but never the parameters (SASSNet's generator term).
    """
    modes = {m: m.training for m in module.modules()}
    flags = [(p, p.requires_grad) for p in module.parameters()] if frozen else []
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes.items():
            m.train(training)
