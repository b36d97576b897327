"""What the hardware can do fast: mixed precision and memory format for a device.

Training (:mod:`semiseg3d.training.runtime`), ``semiseg3d test`` and ``semiseg3d predict``
resolve the device and the config keys ``amp`` and ``channels_last`` here, with one
function, :func:`resolve_runtime`, into an :class:`Acceleration`:

- ``device``: ``auto`` -> CUDA when available, else the CPU; ``cuda`` on a machine without
  CUDA is refused (one message, naming where the choice came from). ``test`` and
  ``predict`` run a finished run where they are: ``auto`` unless the run says ``cpu``, or
  their ``--device`` (:func:`inference_device`).

- ``amp: auto`` -> bfloat16 autocast where the device computes it natively (a CUDA GPU with
  bf16 support; a CPU with AVX-512 BF16 or AMX, on which oneDNN runs bf16 3-D convolutions),
  float32 elsewhere. ``bf16`` / ``fp16`` force a dtype; ``none`` is float32.
- ``channels_last: auto`` -> ``torch.channels_last_3d`` whenever autocast is on, or on CUDA;
  float32 on a CPU stays in the default (contiguous) format, the reference path.
- The CPU bf16 self-check (:mod:`semiseg3d.bf16check`): oneDNN's bf16 kernels are wrong at
  some small shapes, which shapes depending on the CPU. When bf16 would run on a CPU and the
  caller hands a :class:`~semiseg3d.bf16check.Bf16Probe` (the run's networks and input
  shape), the networks run once in float32 and in bf16 and are compared (the verdict is
  cached per CPU, torch and oneDNN version). A failed check makes ``auto`` fall back to
  float32 (the reason goes to the log) and refuses ``bf16`` with one line.

Losses are always computed in float32 (the objective disables autocast), and inference
accumulates window probabilities in float32.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import torch

from semiseg3d.bf16check import Bf16Probe, bf16_verdict, cpu_info
from semiseg3d.config.run import AMP_CHOICES
from semiseg3d.errors import InputError

__all__ = [
    "AMP_CHOICES",
    "DEVICE_CHOICES",
    "Acceleration",
    "cpu_supports_bf16",
    "cuda_supports_bf16",
    "resolve_acceleration",
    "resolve_device",
    "inference_device",
    "resolve_runtime",
]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
_DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@functools.cache
def cpu_supports_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX-BF16).

    Asks oneDNN through PyTorch first; falls back to the flags in ``/proc/cpuinfo``.
    """
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        with contextlib.suppress(Exception):
            return bool(probe())
    flags = cpu_info()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cuda_supports_bf16() -> bool:
    """True when CUDA is available and its current device supports bfloat16."""
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass(frozen=True)
class Acceleration:
    """The resolved precision and memory format of a run on one device.

    Attributes:
        device: where the networks run.
        dtype: autocast dtype (``torch.bfloat16`` / ``torch.float16``) or None (float32).
        channels_last: models and 5-D inputs in ``torch.channels_last_3d``.
        amp: the config value this came from (``auto``, ``none``, ``bf16``, ``fp16``).
        note: why ``auto`` chose float32 where bf16 would otherwise run ("" if not).
    """

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    amp: str = "none"
    note: str = ""

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        return _DTYPE_NAMES[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast context for forward passes (a no-op in float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def prepare(self, x: Any) -> Any:
        """A module or 5-D tensor in the resolved memory format (others unchanged)."""
        if not self.channels_last:
            return x
        if isinstance(x, torch.Tensor) and x.dim() != 5:
            return x
        return x.to(memory_format=torch.channels_last_3d)

    def describe(self) -> dict[str, Any]:
        """Plain values for logs and ``config.yaml``: device, precision, channels_last."""
        out: dict[str, Any] = {
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
        }
        if self.note:
            out["note"] = self.note
        return out


def resolve_acceleration(
    amp: str,
    channels_last: bool | str,
    device: torch.device | str,
    probe: Bf16Probe | None = None,
) -> Acceleration:
    """Resolve the config keys ``amp`` and ``channels_last`` for ``device``.

    Args:
        amp: ``auto`` | ``none`` | ``bf16`` | ``fp16``.
        channels_last: True, False or ``"auto"``.
        device: the device the networks run on.
        probe: the run's networks and input shape for the CPU bf16 self-check
            (:func:`semiseg3d.bf16check.bf16_verdict`); None trusts the CPU without a check
            (tools that compare paths themselves, such as the speed benchmark).

    Returns:
        An :class:`Acceleration`.

    Raises:
        InputError: an unknown value, ``fp16`` on a CPU (no fast float16 path there;
            use ``bf16`` or ``auto``), or ``bf16`` on a CPU whose self-check failed.
    """
    dev = torch.device(device)
    if amp not in AMP_CHOICES:
        raise InputError(f"config key 'amp' must be one of {list(AMP_CHOICES)}, got {amp!r}")
    if channels_last not in (True, False, "auto"):
        raise InputError(
            f"config key 'channels_last' must be true, false or auto, got {channels_last!r}"
        )
    dtype: torch.dtype | None
    note = ""
    if amp == "auto":
        fast = cuda_supports_bf16() if dev.type == "cuda" else cpu_supports_bf16()
        dtype = torch.bfloat16 if fast and dev.type in ("cpu", "cuda") else None
    elif amp == "bf16":
        dtype = torch.bfloat16
    elif amp == "fp16":
        if dev.type != "cuda":
            raise InputError("config key 'amp' = 'fp16' needs CUDA; on a CPU use 'bf16' or 'auto'")
        dtype = torch.float16
    else:
        dtype = None
    if dtype == torch.bfloat16 and dev.type == "cpu" and probe is not None:
        cl_bf16 = True if channels_last == "auto" else bool(channels_last)
        verdict = bf16_verdict(probe, cl_bf16)
        if not verdict.ok:
            where = f"{probe.label} at input {list(probe.shape)}"
            if amp == "bf16":
                raise InputError(
                    f"config key 'amp' = 'bf16': this CPU computes {where} wrongly in bf16 "
                    f"({verdict.reason}); use auto or none"
                )
            dtype, note = (
                None,
                f"float32 instead of bf16: bf16 self-check failed for {where} ({verdict.reason})",
            )
    if channels_last == "auto":
        cl = dtype is not None or dev.type == "cuda"
    else:
        cl = bool(channels_last)
    return Acceleration(device=dev, dtype=dtype, channels_last=cl, amp=amp, note=note)


def resolve_device(choice: str | torch.device, where: str = "config key 'device'") -> torch.device:
    """The device of ``choice``: ``auto`` (CUDA when available, else the CPU), ``cpu``,
    ``cuda``, or a ``torch.device`` as it is.

    Args:
        choice: the requested device.
        where: what error messages name (the config key or the command-line option).

    Raises:
        InputError: ``cuda`` on a machine without CUDA, or an unknown choice.
    """
    if isinstance(choice, torch.device):
        return choice
    if choice not in DEVICE_CHOICES:
        raise InputError(f"{where} must be one of {list(DEVICE_CHOICES)}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{where} = 'cuda' but CUDA is not available on this machine")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def inference_device(run_device: str, override: str | torch.device | None) -> str | torch.device:
    """The device choice of ``test`` / ``predict`` for a finished run: ``override`` (their
    ``--device``) when given, else ``auto`` unless the run's config says ``cpu`` (a run
    trained on a GPU is evaluated on the CPU of a machine without one)."""
    if override is not None:
        return override
    return "cpu" if run_device == "cpu" else "auto"


def resolve_runtime(
    device: str | torch.device,
    amp: str,
    channels_last: bool | str,
    probe: Bf16Probe | None = None,
    *,
    where: str = "config key 'device'",
) -> Acceleration:
    """Device, precision and memory format of a run, in one call (train, test, predict).

    Args:
        device: ``auto`` | ``cpu`` | ``cuda`` or a ``torch.device`` (:func:`resolve_device`).
        amp, channels_last, probe: as for :func:`resolve_acceleration` (``probe``: the run's
            networks and input shape for the CPU bf16 self-check).
        where: what a device error names.

    Raises:
        InputError: see :func:`resolve_device` and :func:`resolve_acceleration`.
    """
    return resolve_acceleration(amp, channels_last, resolve_device(device, where), probe)
