"""Loss terms of the method, one module per paper component, each a pure function.

- :mod:`~semiseg3d.losses.supervised`: CE and batch Dice (spec 2.1).
- :mod:`~semiseg3d.losses.cr`: consistency regularisation with the XOR confidence mask.
- :mod:`~semiseg3d.losses.consistency`: inter-network consistency (cosine / mse / none).
- :mod:`~semiseg3d.losses.cce`: CPS and EFS (and the released code's EFS block).
- :mod:`~semiseg3d.losses.ue`: uncertainty-rectified pseudo supervision.
- :mod:`~semiseg3d.losses.pgl`: prototype-guided learning (and the released code's).
- :mod:`~semiseg3d.losses.ramps`: ramp-ups and learning-rate schedules (plain numbers).
- :mod:`~semiseg3d.losses.objective`: the per-iteration objective in both modes.
"""

from __future__ import annotations

from semiseg3d.losses.objective import (
    TERM_NAMES,
    DualSettings,
    active_terms,
    dual_objective,
    first_nonfinite,
    suponly_objective,
)
from semiseg3d.losses.ramps import lr_at, rampup_weight

__all__ = [
    "TERM_NAMES",
    "DualSettings",
    "active_terms",
    "dual_objective",
    "first_nonfinite",
    "suponly_objective",
    "lr_at",
    "rampup_weight",
]
