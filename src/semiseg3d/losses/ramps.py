"""Time-dependent coefficients: the PGL ramp-up, the optional ramp-up of the pseudo-label
terms (``pl_rampup``) and the learning-rate schedules.

- ``w_c(t) = rampup_max * exp(-5 (1 - min(floor(t / unit), length) / length)^2)``
  (MCF's sigmoid ramp-up as called by C: ``0.1 * sigmoid_rampup(t // 150, 40)``, spec 2.7).
- Step schedule (LA, Pancreas; spec 4.1): ``lr`` for ``t <= 2500``, times ``gamma`` after
  the optimizer step of each iteration listed in ``lr_steps`` (``t`` = the 0-based index of
  the iteration whose step uses this learning rate).
- Poly schedule (BraTS): ``lr (1 - t / iterations)^power``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "sigmoid_rampup",
    "rampup_weight",
    "pseudo_label_weight",
    "step_lr",
    "poly_lr",
    "lr_at",
]


def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - clip(current, 0, length) / length)^2)``; 1 when ``length`` is 0.

    Args:
        current: ramp position in ramp units (already floored by the caller).
        length: ramp length in the same units.

    Returns:
        A factor in (0, 1].
    """
    if length == 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


def rampup_weight(
    iteration: int, rampup_max: float = 0.1, length: int = 40, unit: int = 150
) -> float:
    """``w_c(t) = rampup_max * sigmoid_rampup(floor(t / unit), length)``.

    Args:
        iteration: 0-based iteration index ``t``.
        rampup_max: weight reached at the end of the ramp.
        length: ramp length in units.
        unit: iterations per unit.

    Returns:
        The weight (0.1 e^-5 at t = 0; 0.1 from t = length*unit on, with the defaults).
    """
    return rampup_max * sigmoid_rampup(iteration // unit, length)


def pseudo_label_weight(
    iteration: int, pl_rampup: str = "sigmoid", length: int = 40, unit: int = 150
) -> float:
    """Weight of the pseudo-label terms (CPS, EFS, UE) at iteration ``t``.

    ``pl_rampup = "none"``: 1 at every iteration (the paper's "use 1", spec 3). ``sigmoid``:
    the PGL ramp's shape and schedule (``length`` units of ``unit`` iterations) rising to 1,
    i.e. ``exp(-5 (1 - min(floor(t / unit), length) / length)^2)``.
    """
    if pl_rampup == "none":
        return 1.0
    return rampup_weight(iteration, 1.0, length, unit)


def step_lr(iteration: int, base_lr: float, steps: Sequence[int], gamma: float) -> float:
    """``base_lr * gamma^k``, ``k`` = number of ``steps`` strictly below ``iteration``.

    With ``steps = (2500, 5000)``, 6000 iterations: 2501 iterations at ``base_lr``,
    2500 at ``0.1 base_lr``, 999 at ``0.01 base_lr`` (C: decay after the step of
    iterations 2500 and 5000).
    """
    k = sum(1 for s in steps if iteration > s)
    return base_lr * gamma**k


def poly_lr(iteration: int, base_lr: float, total: int, power: float) -> float:
    """``base_lr (1 - t / total)^power`` (SSL4MIS / AC-MT convention), 0 from ``t >= total``."""
    frac = max(0.0, 1.0 - iteration / total)
    return base_lr * frac**power


def lr_at(
    iteration: int,
    base_lr: float,
    policy: str = "step",
    steps: Sequence[int] = (2500, 5000),
    gamma: float = 0.1,
    total: int = 6000,
    power: float = 0.9,
) -> float:
    """Learning rate of the optimizer step of iteration ``t`` under ``policy``.

    Args:
        iteration: 0-based iteration index.
        base_lr: initial learning rate.
        policy: ``step`` (:func:`step_lr` with ``steps``, ``gamma``) or ``poly``
            (:func:`poly_lr` with ``total``, ``power``).

    Returns:
        The learning rate.
    """
    if policy == "step":
        return step_lr(iteration, base_lr, steps, gamma)
    if policy == "poly":
        return poly_lr(iteration, base_lr, total, power)
    raise ValueError(f"lr_at: unknown lr_policy {policy!r}")
