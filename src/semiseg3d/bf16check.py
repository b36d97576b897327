"""The bf16 self-check: does THIS CPU compute the run's networks correctly in bfloat16?

oneDNN's bf16 kernels are wrong at some small shapes, and which shapes depends on the CPU,
not on a rule that can be written down once: on an Intel AMX machine (PyTorch 2.13, oneDNN
3.12) the stride-2 convolution of the deepest ResNet-34 stage gave relative errors up to 1e36
when its output had an axis of 1 beside a longer one (``bench/bf16_conv_check.py``); on an
AMD EPYC with AVX-512 BF16 and no AMX, the same forward convolutions are right while the
backward pass of both subnets gives NaN / Inf weight gradients at patches 16x16x16 and
32x32x16 (and is finite at 64x64x32 and 96x96x96). So before bf16 is used, the run's own
networks are run once at the run's own input shape in float32 and in bf16 autocast, and the
two are compared (the bf16 pass :data:`REPEATS` times: on the AMD machine the same check
gave NaN on one call and finite values on the next):

- training (``train=True``): networks in train mode (dropout off, so both passes see the same
  network), forward, then the gradient of ``mean(out * w)`` for a fixed random ``w`` with
  respect to every parameter;
- inference (``train=False``): networks in eval mode, forward only, no gradient.

The verdict is "wrong" when any bf16 output or gradient is non-finite, when the largest output
difference exceeds :data:`OUT_TOLERANCE` of the largest float32 output, or when the gradient
difference exceeds :data:`GRAD_TOLERANCE` of the float32 gradient (L2 over all parameters).
The tolerances are loose on purpose: a correct bf16 pass measured at most 0.13 (outputs) and
0.87 (gradients; BatchNorm's backward in bf16 is noisy) at 16^3 to 96^3 on that AMD machine,
while the faults are NaN, Inf or errors of 1e17 and more.

The networks are deep-copied (the run's BatchNorm statistics are untouched) and nothing draws
from the global random generator. Verdicts are cached in a JSON file (``SEMISEG3D_CACHE_DIR``,
else ``$XDG_CACHE_HOME/semiseg3d``, else ``~/.cache/semiseg3d``) under a key made of the CPU
model and flags, the torch and oneDNN versions, the method (its networks), the input shape,
train / eval and channels-last: a second run on the same machine skips the check.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semiseg3d.io.atomic import write_text_atomic

__all__ = [
    "GRAD_TOLERANCE",
    "OUT_TOLERANCE",
    "Bf16Probe",
    "Bf16Verdict",
    "bf16_verdict",
    "cache_path",
    "cached_verdict",
    "cpu_info",
    "compare_bf16",
    "machine_key",
]

#: largest |bf16 - fp32| output difference, relative to the largest |fp32| output
OUT_TOLERANCE = 0.5
#: ||g_bf16 - g_fp32|| / ||g_fp32|| over all parameters (L2)
GRAD_TOLERANCE = 4.0
_CACHE_FILE = "bf16-verdicts-v2.json"  # v2: REPEATS bf16 passes per check
#: bf16 passes per network (a fault seen in any of them fails the check)
REPEATS = 3


@dataclass(frozen=True)
class Bf16Probe:
    """What the self-check runs.

    Attributes:
        build: returns the networks to check (fresh or trained; they are deep-copied).
            Called only when the verdict is not cached.
        shape: the input shape (B, C, X, Y, Z) of one forward of the run.
        train: check a training step (train mode, forward and backward) or inference (eval
            mode, forward only).
        label: what the networks are (the method name), for the cache key and messages.
    """

    build: Callable[[], Sequence[nn.Module]]
    shape: tuple[int, ...]
    train: bool
    label: str


@dataclass(frozen=True)
class Bf16Verdict:
    """The outcome of one check.

    Attributes:
        ok: bf16 computes these networks correctly at this shape.
        reason: why not ("" when ok), one line.
        out_error: largest output difference relative to the largest float32 output.
        grad_error: relative L2 gradient difference (0 for inference).
        seconds: what the check cost when it ran (0 when it came from the cache).
        cached: read from the cache instead of computed.
    """

    ok: bool
    reason: str
    out_error: float
    grad_error: float
    seconds: float = 0.0
    cached: bool = False


def cache_path() -> Path:
    """The verdict cache file (see the module doc for the folder)."""
    folder = os.environ.get("SEMISEG3D_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(base) / "semiseg3d")
    return Path(folder) / _CACHE_FILE


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """This CPU's model name and flags, from ``/proc/cpuinfo`` (``("unknown cpu", {})``
    where it cannot be read)."""
    model, flags = "unknown cpu", frozenset[str]()
    with contextlib.suppress(OSError):
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model == "unknown cpu":
                model = value.strip()
            elif key == "flags" and not flags:
                flags = frozenset(value.split())
    return model, flags


def _cpu_model() -> str:
    """The CPU model name and its bf16-related flags (part of the cache key)."""
    model, flags = cpu_info()
    wanted = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f"))
    return f"{model} [{' '.join(wanted)}]"


@functools.cache
def _onednn_version() -> str:
    """oneDNN's version as PyTorch reports it in its build configuration ("?" if absent)."""
    found = re.search(r"MKL-DNN v([0-9.]+)", torch.__config__.show())
    return found.group(1) if found else "?"


def machine_key() -> str:
    """CPU model and flags, torch and oneDNN versions: what a verdict depends on besides the
    networks and the shape."""
    return f"{_cpu_model()} | torch {torch.__version__} | onednn {_onednn_version()}"


def _probe_key(probe: Bf16Probe, channels_last: bool) -> str:
    shape = "x".join(str(int(s)) for s in probe.shape)
    mode = "train" if probe.train else "eval"
    return f"{machine_key()} | {probe.label} | {shape} | {mode} | cl={int(channels_last)}"


def _prepare(net: nn.Module, train: bool, channels_last: bool) -> nn.Module:
    net = copy.deepcopy(net).float()
    net.train(train)
    for module in net.modules():  # dropout off: both passes must see one network
        if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)):
            module.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    return net


def _first_tensor(out: Any) -> torch.Tensor:
    """The network's main output: the tensor itself or the first tensor of a tuple/list."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"network returned {type(out).__name__}, expected a tensor")
    return out


def _run(
    net: nn.Module, x: torch.Tensor, dtype: torch.dtype | None, train: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One pass: the output (float32, detached) and the parameter gradients (train only).

    ``net`` is the check's own copy; its BatchNorm running statistics may move (train
    mode), which changes no output: train mode normalises by the batch's own statistics and
    eval mode updates none."""
    params = [p for p in net.parameters() if p.requires_grad]
    autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.set_grad_enabled(train), autocast:
        out = _first_tensor(net(x))
    out = out.float()
    grads: list[torch.Tensor] = []
    if train:
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        grads = [
            g.detach().double() if g is not None else torch.zeros(p.shape, dtype=torch.float64)
            for g, p in zip(
                torch.autograd.grad((out * w).mean(), params, allow_unused=True),
                params,
                strict=True,
            )
        ]
    return out.detach().double(), grads


def compare_bf16(
    nets: Sequence[nn.Module], shape: Sequence[int], train: bool, channels_last: bool
) -> tuple[bool, str, float, float]:
    """Run ``nets`` on one random input of ``shape`` in float32 and in bf16 autocast (CPU).

    Args:
        nets: the networks; each returns a tensor or a tuple whose first item is the logits.
        shape: the input (B, C, X, Y, Z).
        train: train mode with the gradient of ``mean(out * w)``, or eval mode forward only.
        channels_last: run both passes in ``torch.channels_last_3d``.

    Returns:
        ``(ok, reason, out_error, grad_error)``: the worst errors over the networks (see the
        module doc); ``reason`` names the first network that failed and how.
    """
    x = torch.randn(tuple(int(s) for s in shape), generator=torch.Generator().manual_seed(0))
    if channels_last and x.dim() == 5:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    worst_out, worst_grad, reason = 0.0, 0.0, ""
    for net in nets:
        net = _prepare(net, train, channels_last)
        name = type(net).__name__
        ref, ref_grads = _run(net, x, None, train)
        scale = float(ref.abs().max())
        den = math.sqrt(sum(float((r**2).sum()) for r in ref_grads)) if train else 0.0
        # the faults are not always deterministic (a pass may be finite, the next NaN): the
        # bf16 pass runs REPEATS times and the worst one counts
        out_err, grad_err, nonfinite = 0.0, 0.0, ""
        for _ in range(REPEATS):
            out, grads = _run(net, x, torch.bfloat16, train)
            if not bool(torch.isfinite(out).all()):
                nonfinite = "outputs"
            elif not all(bool(torch.isfinite(g).all()) for g in grads) and not nonfinite:
                nonfinite = "gradients"
            err = float((out - ref).abs().max()) / scale if scale > 0 else 0.0
            out_err = max(out_err, err if math.isfinite(err) else math.inf)
            if train:
                num = math.sqrt(
                    sum(float(((g - r) ** 2).sum()) for g, r in zip(grads, ref_grads, strict=True))
                )
                err = num / den if den > 0 else 0.0
                grad_err = max(grad_err, err if math.isfinite(err) else math.inf)
        worst_out, worst_grad = max(worst_out, out_err), max(worst_grad, grad_err)
        if reason:
            continue
        if nonfinite:
            reason = f"{name}: non-finite bf16 {nonfinite}"
        elif out_err > OUT_TOLERANCE:
            reason = (
                f"{name}: bf16 outputs differ from float32 by {out_err:.3g} (limit {OUT_TOLERANCE})"
            )
        elif grad_err > GRAD_TOLERANCE:
            reason = (
                f"{name}: bf16 gradients differ from float32 by {grad_err:.3g} "
                f"(limit {GRAD_TOLERANCE})"
            )
    return not reason, reason, worst_out, worst_grad


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_verdict(probe: Bf16Probe, channels_last: bool) -> Bf16Verdict | None:
    """The cached verdict for ``probe`` on this machine, or None when it was never checked
    (nothing is built or run)."""
    hit = _read_cache(cache_path()).get(_probe_key(probe, channels_last))
    if not isinstance(hit, dict) or not {"ok", "reason", "out_error", "grad_error"} <= hit.keys():
        return None
    return Bf16Verdict(
        ok=bool(hit["ok"]),
        reason=str(hit["reason"]),
        out_error=float(hit["out_error"]),
        grad_error=float(hit["grad_error"]),
        cached=True,
    )


def bf16_verdict(probe: Bf16Probe, channels_last: bool, *, use_cache: bool = True) -> Bf16Verdict:
    """The verdict for ``probe`` on this CPU: from the cache, or measured and cached.

    Args:
        probe: the networks and shape of the run.
        channels_last: the memory format the run would use with bf16.
        use_cache: read and write the cache file (an unwritable cache is skipped silently).

    Returns:
        A :class:`Bf16Verdict`.
    """
    key = _probe_key(probe, channels_last)
    path = cache_path()
    if use_cache:
        hit = cached_verdict(probe, channels_last)
        if hit is not None:
            return hit
    t0 = time.monotonic()
    ok, reason, out_err, grad_err = compare_bf16(
        probe.build(), probe.shape, probe.train, channels_last
    )
    verdict = Bf16Verdict(ok, reason, out_err, grad_err, seconds=time.monotonic() - t0)
    if use_cache:
        entries = _read_cache(path)
        record = asdict(verdict)
        record.pop("cached")
        record["out_error"] = out_err if math.isfinite(out_err) else "inf"
        record["grad_error"] = grad_err if math.isfinite(grad_err) else "inf"
        entries[key] = record
        with contextlib.suppress(OSError):
            write_text_atomic(path, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return verdict
