"""A finished run's networks and its method's inference rule, ready for a device: what
``semiseg3d test`` and ``semiseg3d predict`` run."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from semiseg3d.accel import Acceleration, inference_device, resolve_runtime
from semiseg3d.bf16check import Bf16Probe
from semiseg3d.config.run import TrainConfig, config_from_mapping
from semiseg3d.errors import InputError
from semiseg3d.inference.fold import fold_batchnorm
from semiseg3d.methods import get_method
from semiseg3d.models.probs import ProbFn
from semiseg3d.training.checkpoint import FINAL_NAME, load_final

__all__ = ["load_trained", "inference_probe", "runtime_for", "prepared_rule"]


def load_trained(run_dir: str | Path) -> tuple[TrainConfig, dict[str, nn.Module]]:
    """The config and the trained subnets of a finished run.

    Args:
        run_dir: a run folder holding ``model_final.pt``.

    Returns:
        ``(cfg, nets)`` with ``nets`` = ``{"resnet": Subnet A, "vnet": Subnet B}`` for a
        dual run, ``{"vnet": ...}`` for SupOnly, a baseline's trained networks by name
        (:meth:`~semiseg3d.methods.base.Method.build`), on CPU in eval mode.

    Raises:
        InputError: the file is missing or not a semiseg3d model.
    """
    path = Path(run_dir) / FINAL_NAME
    final = load_final(path)
    cfg = config_from_mapping(final["config"], str(path))
    _, nets = get_method(cfg).build()
    missing = sorted(set(nets) - set(final["models"]))
    if missing:
        raise InputError(f"{path}: weights of subnet(s) {missing} missing")
    for name, net in nets.items():
        try:
            net.load_state_dict(final["models"][name])
        except RuntimeError as exc:
            reason = str(exc).splitlines()[0]
            raise InputError(
                f"{path}: weights of '{name}' do not fit the network ({reason})"
            ) from exc
        net.eval()
    return cfg, nets


def inference_probe(cfg: TrainConfig, nets: dict[str, nn.Module], batch_size: int) -> Bf16Probe:
    """The CPU bf16 self-check of sliding-window inference: the trained networks in eval mode
    on one window batch ``(batch_size, 1, *patch)``."""
    return Bf16Probe(
        build=lambda: list(nets.values()),
        shape=(batch_size, 1, *cfg.patch),
        train=False,
        label=cfg.method,
    )


def runtime_for(
    cfg: TrainConfig,
    nets: dict[str, nn.Module],
    batch_size: int,
    device: str | torch.device | None = None,
    where: str = "--device",
) -> Acceleration:
    """Device, precision and memory format to run a finished run with (``test``,
    ``predict``): ``device`` when given, else ``auto`` unless the run says ``cpu``
    (:func:`semiseg3d.accel.inference_device`), and the run's ``amp`` / ``channels_last``
    checked on its networks at ``batch_size`` windows (:func:`inference_probe`,
    :func:`semiseg3d.accel.resolve_runtime`; ``where`` names the option in a device error).
    """
    choice = inference_device(cfg.device, device)
    probe = inference_probe(cfg, nets, batch_size)
    return resolve_runtime(choice, cfg.amp, cfg.channels_last, probe, where=where)


def prepared_rule(
    cfg: TrainConfig, nets: dict[str, nn.Module], accel: Acceleration, subnet: str | None = None
) -> tuple[list[nn.Module], ProbFn, bool]:
    """The method's inference rule, on networks made ready for ``accel``.

    Returns the networks to run (moved to ``accel``'s device, in its memory format), the
    window probability function, and whether the method's own test keeps the largest
    component (``postprocess_lcc`` or the method's default). On the reduced-precision
    (bf16 / fp16) path the networks are copies with every BatchNorm folded into the
    convolution before it (:mod:`semiseg3d.inference.fold`) and their weights cast to that
    dtype once, not by autocast at every call; the float32 path keeps the networks as
    trained (the bit-for-bit reference). Folding comes after the method picks its networks
    (MC-Net rebuilds a V-Net from a state dict).
    """
    method = get_method(cfg)
    members = method.inference_nets(nets, subnet)
    if accel.dtype is not None:
        members = [fold_batchnorm(net).to(accel.dtype) for net in members]
    for net in members:
        accel.prepare(net.to(accel.device))
    return members, method.prob_fn(members), cfg.postprocess_lcc or method.default_lcc
