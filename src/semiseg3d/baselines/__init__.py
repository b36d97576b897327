"""Comparison methods under one protocol (baselines spec): UA-MT, DTC, MC-Net / MC-Net+,
MCF and BCP, beside the paper's dual network and SupOnly.

Each method is one module holding its loss terms as pure functions and a thin
:class:`~semiseg3d.baselines.base.Method` subclass; :data:`METHODS` maps the config's
``method`` to it. Adding a method = one module + one line here + its name in the
``method`` choices of :mod:`semiseg3d.training.config` (see docs/baselines.md).
"""

from __future__ import annotations

from semiseg3d.baselines.base import DualMethod, Method, SupOnlyMethod
from semiseg3d.baselines.bcp import BCP
from semiseg3d.baselines.dtc import DTC
from semiseg3d.baselines.mcf import MCF
from semiseg3d.baselines.mcnet import MCNetMethod
from semiseg3d.baselines.uamt import UAMT
from semiseg3d.errors import InputError
from semiseg3d.training.config import TrainConfig

__all__ = ["METHODS", "BASELINES", "Method", "get_method"]

#: config ``method`` -> its Method class
METHODS: dict[str, type[Method]] = {
    "dual": DualMethod,
    "suponly": SupOnlyMethod,
    "uamt": UAMT,
    "dtc": DTC,
    "mcnet": MCNetMethod,
    "mcnet_plus": MCNetMethod,
    "mcf": MCF,
    "bcp": BCP,
}
#: the comparison methods (every method but the paper's and SupOnly)
BASELINES: tuple[str, ...] = ("uamt", "dtc", "mcnet", "mcnet_plus", "mcf", "bcp")


def get_method(cfg: TrainConfig) -> Method:
    """The :class:`Method` of ``cfg.method``.

    Raises:
        InputError: for a method without an implementation.
    """
    cls = METHODS.get(cfg.method)
    if cls is None:
        raise InputError(f"config key 'method': no implementation of {cfg.method!r}")
    return cls(cfg)
