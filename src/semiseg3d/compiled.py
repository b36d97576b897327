"""``torch.compile`` of the networks' forward passes: the config key ``compile``.

``compile: auto | on | off`` (YAML reads ``on`` / ``off`` as true / false; both spellings
are accepted) is resolved once per training session by :func:`resolve_compile`:

- ``off`` (false): eager PyTorch, the reference path.
- ``on`` (true): every network the method runs through the step context
  (:meth:`semiseg3d.training.trainer._Run.forward`: students, EMA teachers, SASSNet's
  discriminator) is wrapped once in ``torch.compile`` (inductor; ``dynamic=False``: one
  graph per input shape, grad mode and train/eval state). The networks' parameters and
  state dicts are the eager modules' own, so checkpoints, ``model_final.pt`` and a resume
  do not depend on the setting. Refused with one line where inductor cannot run: no C++
  compiler on a CPU, no Triton on a CUDA device.
- ``auto``: on for CUDA where Triton is installed; off on a CPU. On the 2-core AMD EPYC
  this project measured (``bench/README.md``), the compiled bf16 step was no faster than
  the eager one (paper mode 1.56 against 1.47 s per iteration at the LA-lite patch, SupOnly
  0.33 against 0.29 s) after 30-80 s of compiling: oneDNN runs the 3-D convolutions, which
  are most of the step, the same way in both.

Random numbers inside a compiled graph (dropout) are drawn by the eager generator
(``torch._inductor.config.fallback_random``), so a compiled run consumes the same random
streams as an eager one and a resumed compiled run equals an uninterrupted one; the
results of ``on`` and ``off`` differ only by the floating-point order of fused kernels.

The seconds spent compiling are taken from PyTorch's own compile metrics
(:func:`compile_seconds`) and written to ``train.log``.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from semiseg3d.errors import InputError

__all__ = ["CompileChoice", "resolve_compile", "missing_backend", "Compiler", "compile_seconds"]

#: recompilations allowed per compiled function before PyTorch falls back to eager (the
#: default 8 is too few for one network run at several batch shapes, with and without
#: gradients, in train and eval mode)
RECOMPILE_LIMIT = 64

#: PyTorch's compile-time metrics that add up to the time spent compiling: Dynamo's
#: capture (which includes the forward graph's inductor compile) and the backward graph's
#: compile, which runs lazily at the first backward
_COMPILE_METRICS = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")


@dataclass(frozen=True)
class CompileChoice:
    """The resolved ``compile`` key.

    Attributes:
        enabled: wrap the networks in ``torch.compile``.
        setting: the config value (``auto``, ``on``, ``off``).
        note: why ``auto`` chose what it chose ("" where the setting decided).
    """

    enabled: bool
    setting: str
    note: str = ""


def _normalise(value: bool | str) -> str:
    if value is True or value == "on":
        return "on"
    if value is False or value == "off":
        return "off"
    if value == "auto":
        return "auto"
    raise InputError(f"config key 'compile' must be auto, on or off, got {value!r}")


def missing_backend(device: torch.device) -> str:
    """Why inductor cannot run on ``device`` here ("" when it can)."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "Triton is not installed (inductor needs it on CUDA)"
        return ""
    if device.type == "cpu":
        if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
            return "no C++ compiler on PATH (inductor needs one on a CPU)"
        return ""
    return f"torch.compile is not supported on {device.type} by this project"


def resolve_compile(value: bool | str, device: torch.device | str) -> CompileChoice:
    """Resolve the config key ``compile`` for ``device``.

    Args:
        value: ``auto`` | ``on`` | ``off`` (or true / false).
        device: the device the networks run on.

    Raises:
        InputError: an unknown value, or ``on`` where inductor cannot run (naming why).
    """
    setting = _normalise(value)
    dev = torch.device(device)
    if setting == "off":
        return CompileChoice(False, setting)
    missing = missing_backend(dev)
    if setting == "on":
        if missing:
            raise InputError(f"config key 'compile' = on: {missing}; use auto or off")
        return CompileChoice(True, setting)
    if missing:
        return CompileChoice(False, setting, f"eager: {missing}")
    if dev.type == "cpu":
        return CompileChoice(
            False, setting, "eager on a CPU (the compiled step measured no faster there)"
        )
    return CompileChoice(True, setting)


def _configure() -> None:
    """Process-wide settings of a compiled run (see the module docstring)."""
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    for name in ("recompile_limit", "cache_size_limit"):  # the name changed in torch 2.6
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(RECOMPILE_LIMIT, getattr(dynamo_config, name)))


class Compiler:
    """The compiled forward of each network of a run, made on first use.

    Args:
        enabled: False returns every network as it is.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._wrapped: dict[nn.Module, Callable[..., Any]] = {}  # modules hash by identity
        if enabled:
            _configure()

    def __call__(self, net: nn.Module) -> Callable[..., Any]:
        """What to call for ``net(x)``: its compiled wrapper, or ``net`` itself."""
        if not self.enabled:
            return net
        fn = self._wrapped.get(net)
        if fn is None:
            fn = self._wrapped[net] = torch.compile(net, dynamic=False)
        return fn


def compile_seconds() -> float | None:
    """Seconds this process has spent compiling so far (PyTorch's compile metrics), or
    None where this PyTorch does not report them."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:
        return None
    if compilation_time_metrics and not any(
        k in compilation_time_metrics for k in _COMPILE_METRICS
    ):
        return None  # this PyTorch names its metrics differently
    return float(sum(sum(compilation_time_metrics.get(k, ())) for k in _COMPILE_METRICS))
