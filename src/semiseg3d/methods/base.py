"""The per-method part of training and inference (baselines spec, section 1.3).

The trainer (:mod:`semiseg3d.training.trainer`), ``semiseg3d test`` and ``semiseg3d
predict`` hold no per-method code: they ask the run's :class:`Method` for

- ``build()``: the trained networks by name (one SGD optimizer each, saved in checkpoints
  and in ``model_final.pt``), and ``build_teachers()``: EMA copies (no optimizer, saved in
  checkpoints only);
- ``total_steps()`` and ``lr(t)``: the optimizer steps of the run and the learning rate of
  step ``t`` (BCP adds its pre-training stage);
- ``loss(ctx, t, image, label_l)``: the scalar to back-propagate and the named terms to log,
  for the batch of step ``t`` (labeled samples first);
- ``after_step(t)``: EMA updates (SASSNet: its discriminator's own optimizer step);
- ``state_dict()`` / ``load_state_dict(state)``: state the method keeps beside its
  networks and teachers that a resume needs (SASSNet's discriminator and its Adam state,
  SS-Net's prototype memory); saved in ``checkpoint.pt`` (empty by default);
- ``inference_nets(nets, subnet)`` and ``prob_fn(members)``: the networks and the
  probability function of the method's own inference rule; ``default_lcc``: whether its own
  test keeps the largest connected component.

The dual method and SupOnly are :class:`Method` objects too
(:class:`~semiseg3d.methods.dual.DualMethod`, :class:`~semiseg3d.methods.suponly.SupOnlyMethod`);
every method lives in one module of :mod:`semiseg3d.methods`, named by its entry in the
method registry (:mod:`semiseg3d.config.registry`). The class attributes below
(``uses_unlabeled``, ``default_lcc``) and the inference methods are the method's inference
rule; ``semiseg3d complexity`` counts what :meth:`build` and :meth:`build_teachers` return.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from semiseg3d.config.registry import method_options
from semiseg3d.config.run import TrainConfig
from semiseg3d.errors import InputError
from semiseg3d.losses.ramps import lr_at
from semiseg3d.models.probs import ProbFn, mean_head_softmax, softmax_ensemble

__all__ = [
    "StepContext",
    "Method",
    "VNetPartMethod",
    "ProbFn",
    "softmax_ensemble",
    "config_lr",
    "method_settings",
]

_S = TypeVar("_S")


def config_lr(cfg: TrainConfig, t: int) -> float:
    """Learning rate of step ``t`` under the config's schedule (``lr``, ``lr_policy``,
    ``lr_steps``, ``lr_gamma``, ``iterations``, ``poly_power``)."""
    return float(
        lr_at(t, cfg.lr, cfg.lr_policy, cfg.lr_steps, cfg.lr_gamma, cfg.iterations, cfg.poly_power)
    )


def method_settings(cls: type[_S], cfg: TrainConfig) -> _S:
    """A method's ``<Name>Settings`` dataclass from the run's ``method_options``: the
    options its registry entry declares, validated there, defaults filled in (the
    dataclass's fields are the option names)."""
    return cls(**method_options(cfg.method, cfg.method_options))


class StepContext(Protocol):
    """What the trainer lends a method during one step."""

    device: torch.device
    noise_gen: torch.Generator  #: seeded generator on the device, saved in checkpoints
    pgl_gen: torch.Generator  #: a second one (dual: PGL sampling; BCP: cuboid masks)
    label_u: Tensor  #: (B_u, X, Y, Z) labels of the unlabeled samples, -1 where absent

    def forward(self, net: nn.Module, x: Tensor, *, perturb: bool = False) -> Any:
        """``net(x)`` under the run's autocast and memory format; tensor outputs as float32."""
        ...


class Method:
    """Base class: one V-Net-free skeleton; subclasses fill in the parts (module docstring).

    Args:
        cfg: the run config (validated).
    """

    #: trains on unlabeled cases too (the sampler draws ``batch_unlabeled`` of them)
    uses_unlabeled: bool = True
    #: the method's own test keeps the largest connected component
    default_lcc: bool = False
    #: ``"module:Class"`` of the method's one trained network, built without arguments by
    #: the default :meth:`build` under the name :attr:`network_name` ("" : the method builds)
    network: str = ""
    network_name: str = "vnet"
    #: ``"torch"``: the networks of :meth:`networks` are re-initialised with PyTorch's
    #: defaults after construction, as the originals of UA-MT, DTC, SASSNet, SS-Net, CPCL,
    #: AC-MT and ML-RPL keep them (their Kaiming init is commented out or absent; issue 18
    #: found that the initialisation decides MC-Net's and BCP's LA-lite score);
    #: None keeps what the constructors did: spec 1.4's Kaiming-normal, or the ``init=``
    #: a method passes itself (MC-Net(+) and BCP, :func:`semiseg3d.models.blocks.init_weights`)
    reinit: str | None = None
    #: config keys that choose only how trained weights become a prediction (a head, a
    #: decoder), which ``semiseg3d test --set`` may change on a finished run
    #: (:mod:`semiseg3d.inference.overrides`); a method option as ``method_options.<name>``
    inference_keys: tuple[str, ...] = ()

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.nets: dict[str, nn.Module] = {}
        self.teachers: dict[str, nn.Module] = {}

    # -- networks ------------------------------------------------------------------------
    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        """Fresh networks: ``(container, trained networks by name)``; by default the one
        network :attr:`network` names."""
        if not self.network:
            raise NotImplementedError(f"{type(self).__name__}.build")
        module, _, attr = self.network.partition(":")
        model = getattr(importlib.import_module(module), attr)()
        return model, {self.network_name: model}

    def build_teachers(self) -> dict[str, nn.Module]:
        """EMA teachers by name (none by default); built after :meth:`build`."""
        return {}

    def networks(self) -> tuple[nn.Module, dict[str, nn.Module], dict[str, nn.Module]]:
        """What a fresh run trains: :meth:`build`, then :meth:`build_teachers`, each
        network then re-initialised as the config's ``init`` says (``auto``: as
        :attr:`reinit` says; ``kaiming`` / ``torch``: that scheme for every method, an
        ablation), in that order, so the random draws are a function of the seed alone."""
        model, nets = self.build()
        teachers = self.build_teachers()
        scheme = self.reinit if self.cfg.init == "auto" else self.cfg.init
        if scheme is not None:
            from semiseg3d.models.blocks import init_weights

            for net in [*nets.values(), *teachers.values()]:
                init_weights(net, scheme)
        return model, nets, teachers

    def attach(self, nets: dict[str, nn.Module], teachers: dict[str, nn.Module]) -> None:
        """Remember the (device-placed) networks the steps work on."""
        self.nets, self.teachers = nets, teachers

    # -- schedule ------------------------------------------------------------------------
    def total_steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.cfg.iterations

    def lr(self, t: int) -> float:
        """Learning rate of step ``t`` (0-based)."""
        return config_lr(self.cfg, t)

    # -- one step ------------------------------------------------------------------------
    def loss(
        self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of step ``t``.

        Args:
            ctx: the trainer's step context.
            t: 0-based step index.
            image: (B_l + B_u, 1, X, Y, Z), labeled samples first.
            label_l: (B_l, X, Y, Z) int64 labels of the labeled samples.

        Returns:
            ``(total, terms)``: the scalar to back-propagate, named 0-d terms (detached).
        """
        raise NotImplementedError

    def after_step(self, t: int) -> None:
        """Called after the optimizer step of ``t`` (EMA updates)."""

    # -- method state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State beyond the trained networks and teachers that a resume needs (saved in
        ``checkpoint.pt`` after :meth:`attach`); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (called after :meth:`attach`)."""

    # -- inference -----------------------------------------------------------------------
    def inference_nets(self, nets: dict[str, nn.Module], subnet: str | None) -> list[nn.Module]:
        """The networks the method's inference rule runs (in eval mode, on CPU)."""
        self.one_network(subnet)
        return [next(iter(nets.values()))]

    def one_network(self, subnet: str | None) -> None:
        """Refuse ``--subnet a`` for a method whose inference runs one network."""
        if subnet not in (None, "both", "b"):
            raise InputError(f"--subnet {subnet}: method '{self.cfg.method}' has one network")

    def prob_fn(self, members: list[nn.Module]) -> ProbFn:
        """``(B, 1, px, py, pz) -> (B, 2, px, py, pz)`` class probabilities."""
        return softmax_ensemble(members)


class VNetPartMethod(Method):
    """A method that trains one V-Net with extra heads or decoders (MC-Net, URPC, SS-Net,
    ML-RPL). Inference: the V-Net part (:meth:`vnet_part`) loaded strictly into a plain
    V-Net, softmax; or, where :meth:`mean_heads` says so, the mean softmax of every head."""

    def vnet_part(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The plain V-Net's entries of the trained network's state dict."""
        from semiseg3d.models.vnet import vnet_state

        return vnet_state(state)

    def mean_heads(self) -> bool:
        """Infer with the mean of every head's softmax instead of the V-Net part."""
        return False

    def inference_nets(self, nets: dict[str, nn.Module], subnet: str | None) -> list[nn.Module]:
        self.one_network(subnet)
        (net,) = nets.values()
        if self.mean_heads():
            return [net]
        from semiseg3d.models.vnet import VNet

        vnet = VNet()
        vnet.load_state_dict(self.vnet_part(net.state_dict()), strict=True)
        return [vnet.eval()]

    def prob_fn(self, members: list[nn.Module]) -> ProbFn:
        if self.mean_heads():
            return mean_head_softmax(members[0])
        return softmax_ensemble(members)
