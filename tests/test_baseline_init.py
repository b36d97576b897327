"""Every method's networks start as its original's do (issue 18): PyTorch's defaults for
MC-Net(+), BCP, UA-MT, DTC, SASSNet, SS-Net, CPCL, AC-MT and ML-RPL; spec 1.4's
Kaiming-normal for the dual network, SupOnly, MCF, URPC and LUSEG. Expected statistics are computed here
from each weight's shape, independently of ``init_weights``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from semiseg3d.config.run import TrainConfig
from semiseg3d.methods import get_method
from semiseg3d.models.blocks import init_weights
from semiseg3d.models.dual import DualNet


def _convs(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, nn.Conv3d | nn.ConvTranspose3d)]


def _fan_in(weight: torch.Tensor) -> int:
    # PyTorch's convention, computed here from the shape: weight.shape[1] * kernel volume
    # (c_in k^3 for Conv3d; c_out k^3 for ConvTranspose3d, whose weight is (c_in, c_out, k^3))
    return int(weight.shape[1]) * math.prod(int(s) for s in weight.shape[2:])


def _assert_torch_default(net: nn.Module) -> None:
    """Every conv weight and bias lies in [-1/sqrt(fan_in), 1/sqrt(fan_in)] (uniform) and the
    large ones have the uniform's SD 1/sqrt(3 fan_in) within 3 %; BatchNorm weight 1, bias 0."""
    convs = _convs(net)
    assert convs
    for conv in convs:
        bound = 1.0 / math.sqrt(_fan_in(conv.weight))
        w = conv.weight.detach().double()
        assert float(w.abs().max()) <= bound + 1e-7, conv
        if conv.bias is not None:
            assert float(conv.bias.detach().abs().max()) <= bound + 1e-7, conv
        if w.numel() >= 20_000:
            sd = float(w.std())
            assert sd == pytest.approx(bound / math.sqrt(3.0), rel=0.03), (conv, sd)
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm3d)):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


#: methods whose original keeps PyTorch's default initialisation
TORCH_INIT = (
    "mcnet",
    "mcnet_plus",
    "bcp",
    "uamt",
    "dtc",
    "sassnet",
    "ssnet",
    "cpcl",
    "acmt",
    "mlrpl",
)
#: methods whose original (or spec 1.4) initialises Kaiming-normal
KAIMING_INIT = ("suponly", "mcf", "urpc", "luseg")


@pytest.mark.parametrize("method", TORCH_INIT)
def test_originals_with_pytorch_default_init_keep_it(method: str) -> None:
    torch.manual_seed(0)
    _, nets, teachers = get_method(TrainConfig(method=method)).networks()
    for net in [*nets.values(), *teachers.values()]:
        _assert_torch_default(net)


def _assert_kaiming(net: nn.Module) -> int:
    """Large conv weights have SD sqrt(2 / fan_in) within 3 % and exceed the uniform bound
    1/sqrt(fan_in) somewhere; returns how many convs were checked."""
    checked = 0
    for conv in _convs(net):
        w = conv.weight.detach().double()
        if w.numel() < 20_000:
            continue
        fan_in = _fan_in(conv.weight)
        assert float(w.std()) == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.03), conv
        assert float(w.abs().max()) > 1.0 / math.sqrt(fan_in)
        checked += 1
    return checked


@pytest.mark.parametrize("method", KAIMING_INIT)
def test_kaiming_methods_keep_kaiming_normal(method: str) -> None:
    torch.manual_seed(0)
    _, nets, teachers = get_method(TrainConfig(method=method)).networks()
    assert sum(_assert_kaiming(net) for net in [*nets.values(), *teachers.values()]) > 10


def test_dual_network_keeps_kaiming_normal() -> None:
    # spec 1.4: conv weights N(0, 2 / fan_in); the uniform bound 1/sqrt(fan_in) is exceeded
    torch.manual_seed(0)
    assert _assert_kaiming(DualNet()) > 10


def test_every_registered_method_is_classified() -> None:
    from semiseg3d.config.registry import METHODS

    assert set(METHODS) == {"dual", *TORCH_INIT, *KAIMING_INIT}


def test_init_weights_schemes() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(64, 64, 3), nn.BatchNorm3d(64), nn.ConvTranspose3d(64, 32, 2))
    init_weights(net, "kaiming")
    assert float(net[0].weight.detach().std()) == pytest.approx(
        math.sqrt(2.0 / (64 * 27)), rel=0.03
    )
    init_weights(net, "torch")
    _assert_torch_default(net)
    with pytest.raises(ValueError, match="init scheme"):
        init_weights(net, "xavier")


def test_config_init_forces_one_scheme_for_any_method() -> None:
    # an ablation key: SupOnly from PyTorch's defaults, MC-Net from Kaiming-normal
    torch.manual_seed(0)
    _, nets, _ = get_method(TrainConfig(method="suponly", init="torch")).networks()
    _assert_torch_default(nets["vnet"])
    _, nets, _ = get_method(TrainConfig(method="mcnet", init="kaiming")).networks()
    assert _assert_kaiming(nets["mcnet"]) > 10


def test_config_refuses_an_unknown_init() -> None:
    from semiseg3d.config.run import config_from_mapping
    from semiseg3d.errors import InputError

    with pytest.raises(InputError, match="'init'"):
        config_from_mapping({"init": "xavier"}, "x.yaml")
