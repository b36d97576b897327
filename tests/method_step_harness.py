"""A small stand-in for the trainer, to run one training step of a baseline's ``Method`` in a
test: a fake step context, a recorder of the batch size every network and BatchNorm layer
sees, and one step (loss, backward, SGD, ``after_step``) with the checks every method must
pass. Used by tests/test_baseline_{mlrpl,cpcl,acmt}.py."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from semiseg3d.errors import InputError
from semiseg3d.training.config import TrainConfig

__all__ = ["config_for", "FakeContext", "BatchRecorder", "StepResult", "run_step", "toy_batch"]


def config_for(method: str, **over: Any) -> TrainConfig:
    """A validated TrainConfig for ``method``; while the method's name is not yet among the
    config's ``method`` choices (the integrator adds it), a config of another baseline with
    ``method`` set afterwards. Method-specific keys the config lacks are set the same way."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    known = {k: v for k, v in over.items() if k in fields}
    extra = {k: v for k, v in over.items() if k not in fields}
    try:
        cfg = TrainConfig(method=method, **known)
    except InputError as exc:
        if "'method'" not in str(exc):
            raise
        cfg = TrainConfig(method="uamt", **known)
        object.__setattr__(cfg, "method", method)
    for key, value in extra.items():
        object.__setattr__(cfg, key, value)
    return cfg


class FakeContext:
    """What the trainer lends a method for one step (see ``baselines.base.StepContext``)."""

    def __init__(self, b_u: int, shape: tuple[int, int, int], seed: int = 0) -> None:
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
    """Forward pre-hooks on every network given and on each of their BatchNorm layers:
    records ``(name, batch size)`` of every call made in train mode."""

    def __init__(self, nets: dict[str, nn.Module]) -> None:
        self.calls: list[tuple[str, int]] = []
        self._handles = []
        for net_name, net in nets.items():
            for name, module in net.named_modules():
                if module is net or isinstance(module, nn.modules.batchnorm._BatchNorm):
                    label = f"{net_name}.{name}" if name else net_name
                    self._handles.append(module.register_forward_pre_hook(self._hook(label)))

    def _hook(self, label: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if module.training:
                self.calls.append((label, int(args[0].shape[0])))

        return hook

    def smallest(self) -> int:
        return min(b for _, b in self.calls)

    def network_calls(self, net_name: str) -> list[int]:
        """Batch sizes of the train-mode calls of the whole network ``net_name``, in order."""
        return [b for label, b in self.calls if label == net_name]

    def close(self) -> None:
        for h in self._handles:
            h.remove()


@dataclasses.dataclass
class StepResult:
    total: Tensor
    terms: dict[str, Tensor]
    recorder: BatchRecorder
    nets: dict[str, nn.Module]
    teachers: dict[str, nn.Module]
    teachers_before: dict[str, dict[str, Tensor]]
    no_grad: list[str]  #: trained parameters that got no (or an all-zero) gradient


def toy_batch(
    b_l: int, b_u: int, shape: tuple[int, int, int], seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Images (B_l + B_u, 1, X, Y, Z) with a bright box, labels (B_l, X, Y, Z) of the box."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn((b_l + b_u, 1, *shape), generator=gen)
    label = torch.zeros((b_l, *shape), dtype=torch.long)
    sx, sy, sz = (s // 4 for s in shape)
    image[:, :, sx : 3 * sx, sy : 3 * sy, sz : 3 * sz] += 2.0
    label[:, sx : 3 * sx, sy : 3 * sy, sz : 3 * sz] = 1
    return image, label


def run_step(
    method: Any, b_l: int = 2, b_u: int = 2, shape: tuple[int, int, int] = (16, 16, 16), t: int = 0
) -> StepResult:
    """Build ``method``'s networks, run ``loss`` at step ``t`` on a toy batch, back-propagate,
    take one SGD step on the trained networks and call ``after_step(t)``."""
    torch.manual_seed(0)
    _, nets = method.build()
    teachers = method.build_teachers()
    method.attach(nets, teachers)
    for net in (*nets.values(), *teachers.values()):
        net.train()
    teachers_before = {
        k: {n: p.detach().clone() for n, p in net.named_parameters()} for k, net in teachers.items()
    }
    image, label_l = toy_batch(b_l, b_u, shape)
    ctx = FakeContext(b_u, shape)
    recorder = BatchRecorder({**nets, **teachers})
    try:
        total, terms = method.loss(ctx, t, image, label_l)
        assert total.dim() == 0 and math.isfinite(total.item())
        params = [p for net in nets.values() for p in net.parameters()]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        opt.zero_grad()
        total.backward()
    finally:
        recorder.close()
    no_grad = [
        f"{k}.{n}"
        for k, net in nets.items()
        for n, p in net.named_parameters()
        if p.grad is None or not bool(p.grad.abs().sum() > 0)
    ]
    for net in teachers.values():
        for p in net.parameters():
            assert p.grad is None, "a teacher parameter received a gradient"
    opt.step()
    for key, net in teachers.items():  # the optimizer never touches a teacher
        for n, p in net.named_parameters():
            assert torch.equal(p, teachers_before[key][n]), f"{key}.{n} changed by the SGD step"
    method.after_step(t)
    return StepResult(total, terms, recorder, nets, teachers, teachers_before, no_grad)
