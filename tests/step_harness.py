"""A stand-in for the trainer, to run one training step of a ``Method`` in a test: a config
for a method, a fake step context, a toy batch, a recorder of the batch size every network
and every BatchNorm layer sees in train mode, and one step (loss, backward, SGD,
``after_step``) with the checks every method must pass. Used by tests/test_baseline_*.py
and tests/test_batch_geometry.py."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from semiseg3d.config.run import TrainConfig

__all__ = [
    "config_for",
    "FakeContext",
    "BatchRecorder",
    "StepResult",
    "toy_batch",
    "sgd_step",
    "run_step",
]


def config_for(method: str, options: Mapping[str, Any] | None = None, **keys: Any) -> TrainConfig:
    """A validated TrainConfig of ``method`` with ``method_options`` = ``options``; a
    ``patch`` given without a ``stride`` gets the patch as its (test-time) stride, which
    training steps never use but validation requires to fit the patch."""
    if "patch" in keys:
        keys.setdefault("stride", keys["patch"])
    return TrainConfig(method=method, method_options=dict(options or {}), **keys)


class FakeContext:
    """The trainer's step context on the CPU in float32 (``methods.base.StepContext``)."""

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

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
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

    def smallest(self) -> int:
        """The smallest batch any recorded call saw."""
        return min(b for _, b in self.calls)

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


def _no_grad(nets: Mapping[str, nn.Module]) -> list[str]:
    return [
        f"{k}.{n}"
        for k, net in nets.items()
        for n, p in net.named_parameters()
        if p.grad is None or not bool(p.grad.abs().sum() > 0)
    ]


def sgd_step(nets: Mapping[str, nn.Module], total: Tensor, lr: float = 0.01) -> list[str]:
    """Back-propagate ``total`` and take one SGD step on ``nets`` (as the trainer does).

    Returns:
        Names of the trained parameters whose gradient is missing or all zero.
    """
    params = [p for net in nets.values() for p in net.parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    opt.zero_grad(set_to_none=True)
    total.backward()
    missing = _no_grad(nets)
    opt.step()
    return missing


@dataclasses.dataclass
class StepResult:
    total: Tensor
    terms: dict[str, Tensor]
    recorder: BatchRecorder
    nets: dict[str, nn.Module]
    teachers: dict[str, nn.Module]
    no_grad: list[str]  #: trained parameters that got no (or an all-zero) gradient


def run_step(
    method: Any,
    b_l: int = 2,
    b_u: int = 2,
    shape: tuple[int, int, int] = (16, 16, 16),
    t: int = 0,
    extra_modules: Mapping[str, nn.Module] | None = None,
    nan_total_ok: bool = False,
) -> StepResult:
    """Build ``method``'s networks, run ``loss`` at step ``t`` on a toy batch, back-propagate,
    take one SGD step on the trained networks and call ``after_step(t)`` (recorded too).

    Checks on the way: the total is a finite scalar (``nan_total_ok``: a NaN without
    gradient may be added, as the released dual script's PGL term; every gradient must
    still be finite); no teacher parameter gets a gradient or is changed by the SGD step. ``extra_modules``: further networks to record (e.g. a
    discriminator the method keeps outside its trained networks); when None, every child
    of the method's container that is not a trained network or teacher is recorded as
    ``model.<name>``.
    """
    torch.manual_seed(0)
    model, nets = method.build()
    teachers = method.build_teachers()
    method.attach(nets, teachers)
    model.train()
    for net in (*nets.values(), *teachers.values()):
        net.train()
    image, label_l = toy_batch(b_l, b_u, shape)
    ctx = FakeContext(b_u, shape)
    watched = {**nets, **teachers, **(extra_modules or {})}
    if extra_modules is None and not any(model is net for net in watched.values()):
        # networks the container holds beside the trained ones (SASSNet's discriminator)
        known = {id(net) for net in watched.values()}
        for name, child in model.named_children():
            if id(child) not in known:
                watched[f"model.{name}"] = child
    recorder = BatchRecorder(watched)
    try:
        total, terms = method.loss(ctx, t, image, label_l)
        assert total.dim() == 0 and (nan_total_ok or math.isfinite(total.item()))
        params = [p for net in nets.values() for p in net.parameters()]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        opt.zero_grad()
        # what the teachers hold after the loss (BCP copies the student in at t = P)
        before = {
            k: {n: p.detach().clone() for n, p in net.named_parameters()}
            for k, net in teachers.items()
        }
        total.backward()
        no_grad = _no_grad(nets)
        for net in nets.values():
            for p in net.parameters():
                assert p.grad is None or bool(torch.isfinite(p.grad).all()), "non-finite grad"
        for net in teachers.values():
            for p in net.parameters():
                assert p.grad is None, "a teacher parameter received a gradient"
        opt.step()
        for key, net in teachers.items():  # the optimizer never touches a teacher
            for n, p in net.named_parameters():
                assert torch.equal(p, before[key][n]), f"{key}.{n} changed by the SGD step"
        method.after_step(t)
    finally:
        recorder.close()
    return StepResult(total, terms, recorder, nets, teachers, no_grad)
