"""Training methods, one module each: the paper's dual network (:mod:`.dual`, both modes),
SupOnly (:mod:`.suponly`) and the comparison methods (UA-MT, DTC, MC-Net / MC-Net+, MCF,
BCP; baselines spec).

Each module holds its loss terms as pure functions and one
:class:`~semiseg3d.methods.base.Method` subclass; the method registry
(:data:`semiseg3d.config.registry.METHODS`) names the class of every ``method``. Adding a
method = one module here + one registry entry (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from semiseg3d.config.registry import spec
from semiseg3d.config.run import TrainConfig
from semiseg3d.errors import InputError
from semiseg3d.methods.base import Method, StepContext

__all__ = ["Method", "StepContext", "method_class", "get_method", "networks"]


def method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass the registry names for method ``name``.

    Raises:
        InputError: an unknown method, or a registry entry whose class cannot be imported.
    """
    path = spec(name).cls
    module_name, _, attr = path.partition(":")
    try:
        cls: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"method '{name}': registry class {path!r} not found ({exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise InputError(f"method '{name}': registry class {path!r} is not a Method")
    return cls


def get_method(cfg: TrainConfig) -> Method:
    """The :class:`Method` of ``cfg.method``, for ``cfg``."""
    return method_class(cfg.method)(cfg)


class _Networks(nn.Module):
    """A method's trained networks and EMA teachers side by side, for counting: a forward
    runs each once on the same input."""

    def __init__(self, nets: dict[str, nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(nets)

    def forward(self, x: Any) -> list[Any]:
        """Every network's output on ``x`` (B, 1, X, Y, Z)."""
        return [net(x) for net in self.nets.values()]


def networks(name: str) -> nn.Module:
    """Every network method ``name`` trains or keeps (EMA teachers included), freshly built
    by the method's own :meth:`~Method.build` / :meth:`~Method.build_teachers`: what
    ``semiseg3d complexity --model NAME`` counts.

    Raises:
        InputError: an unknown method.
    """
    method = get_method(TrainConfig(method=name))
    model, nets = method.build()
    teachers = method.build_teachers()
    if not teachers:
        return model
    return _Networks({**nets, **teachers})
