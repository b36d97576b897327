"""A stand-in for the trainer for one training step of a baseline ``Method`` in a test
(tests/test_baseline_{ssnet,urpc,sassnet}.py): a config for a method the config does not
list yet, a fake step context, a toy batch and a recorder of the batch size every network
and every BatchNorm layer sees in train mode."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from semiseg3d.errors import InputError
from semiseg3d.training.config import TrainConfig

__all__ = ["config_for", "FakeContext", "BatchRecorder", "toy_batch", "sgd_step"]


def config_for(method: str, **over: Any) -> TrainConfig:
    """A validated TrainConfig whose ``method`` is ``method``; keys the config does not have
    yet (``ssnet_*``, ``urpc_*``, ``sassnet_*``: the integrator adds them) and a method name
    it does not list yet are set on the frozen record afterwards."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    known = {k: v for k, v in over.items() if k in fields}
    try:
        cfg = TrainConfig(method=method, **known)
    except InputError as exc:
        if "'method'" not in str(exc):
            raise
        cfg = TrainConfig(method="uamt", **known)
        object.__setattr__(cfg, "method", method)
    for key, value in over.items():
        if key not in fields:
            object.__setattr__(cfg, key, value)
    return cfg


class FakeContext:
    """The trainer's step context on the CPU in float32 (``baselines.base.StepContext``)."""

    def __init__(self, b_u: int, shape: tuple[int, ...], seed: int = 0) -> None:
        self.device = torch.device("cpu")
        self.noise_gen = torch.Generator().manual_seed(seed)
        self.pgl_gen = torch.Generator().manual_seed(seed + 1)
        self.label_u = torch.full((b_u, *shape), -1, dtype=torch.long)

    def forward(self, net: nn.Module, x: Tensor, *, perturb: bool = False) -> Any:
        out = net(x)
        if isinstance(out, Tensor):
            return out.float()
        return type(out)(o.float() for o in out)


class BatchRecorder:
    """Forward pre-hooks on every module given and on every BatchNorm inside it: records
    ``(label, batch size)`` of each call made in train mode (eval-mode calls use running
    statistics and are not recorded)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.calls: list[tuple[str, int]] = []
        self._handles = []
        for top, net in modules.items():
            for name, module in net.named_modules():
                if module is net or isinstance(module, nn.modules.batchnorm._BatchNorm):
                    label = f"{top}.{name}" if name else top
                    self._handles.append(module.register_forward_pre_hook(self._hook(label)))

    def _hook(self, label: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if module.training:
                self.calls.append((label, int(args[0].shape[0])))

        return hook

    def sizes(self, label: str) -> list[int]:
        """Batch sizes of the train-mode calls of ``label``, in order."""
        return [b for lab, b in self.calls if lab == label]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def toy_batch(
    b_l: int, b_u: int, shape: tuple[int, int, int], seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Images (B_l + B_u, 1, X, Y, Z): noise plus a bright box; labels (B_l, X, Y, Z) of the box."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn((b_l + b_u, 1, *shape), generator=gen)
    label = torch.zeros((b_l, *shape), dtype=torch.long)
    sx, sy, sz = (s // 4 for s in shape)
    image[:, :, sx : 3 * sx, sy : 3 * sy, sz : 3 * sz] += 2.0
    label[:, sx : 3 * sx, sy : 3 * sy, sz : 3 * sz] = 1
    return image, label


def sgd_step(nets: dict[str, nn.Module], total: Tensor, lr: float = 0.01) -> list[str]:
    """Back-propagate ``total`` and take one SGD step on ``nets`` (as the trainer does).

    Returns:
        Names of the trained parameters whose gradient is missing or all zero.
    """
    params = [p for net in nets.values() for p in net.parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    opt.zero_grad(set_to_none=True)
    total.backward()
    missing = [
        f"{k}.{n}"
        for k, net in nets.items()
        for n, p in net.named_parameters()
        if p.grad is None or not bool(p.grad.abs().sum() > 0)
    ]
    opt.step()
    return missing
