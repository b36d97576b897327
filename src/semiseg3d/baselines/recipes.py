"""The two recipes of the baselines (baselines spec, section 1).

- ``shared`` (default): the paper's protocol, identical for every method: the config's own
  steps, batch, schedule and augmentation (the project's: random crop only). Nothing is
  changed.
- ``own``: each original's published recipe, final weights: :func:`resolve_recipe` lays the
  original's steps, batch sizes, learning-rate schedule, ramp and augmentation over the
  config (these keys are then fixed by the recipe; other keys keep their values). Where the
  spec marks a dataset n/a for a method, or where the original's recipe cannot be expressed
  here (BCP on Pancreas: Adam and epochs), an ``own`` run is refused.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from semiseg3d.errors import InputError
from semiseg3d.training.config import TrainConfig

__all__ = ["OWN_RECIPES", "own_settings", "resolve_recipe"]

_STEP = {"lr_policy": "step", "lr_steps": (2500, 5000), "lr_gamma": 0.1}
_CONSTANT = {"lr_policy": "step", "lr_steps": ()}
_B22 = {"batch_labeled": 2, "batch_unlabeled": 2, "lr": 0.01}

#: method -> dataset -> TrainConfig keys of the original's recipe (spec 1.2 and 2-6)
OWN_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "uamt": {
        "la": {**_B22, **_STEP, "iterations": 6000, "augment": "rotflip"},
        # no original script: the LA recipe with 96^3 crops, no rot-flip (unconfirmed)
        "pancreas": {**_B22, **_STEP, "iterations": 6000, "augment": "none"},
        # SSL4MIS's 3D script (V-Net kept): 30000 steps, poly, ramp length 200
        "brats": {
            **_B22,
            "iterations": 30000,
            "lr_policy": "poly",
            "poly_power": 0.9,
            "rampup_length": 200,
            "augment": "rotflip",
        },
    },
    "dtc": {
        "la": {**_B22, **_STEP, "iterations": 6000, "augment": "rotflip"},
        "pancreas": {**_B22, **_STEP, "iterations": 6000, "augment": "none"},  # unconfirmed
    },
    "mcnet": {
        "la": {**_B22, **_CONSTANT, "iterations": 15000, "augment": "rotflip"},
        "pancreas": {**_B22, **_CONSTANT, "iterations": 15000, "augment": "none"},
    },
    "mcf": {
        "la": {**_B22, **_STEP, "iterations": 6000, "augment": "none"},
        "pancreas": {**_B22, **_STEP, "iterations": 6000, "augment": "none"},  # unconfirmed
    },
    "bcp": {
        # 4 + 4 (halves of 2), 2000 pre-training steps at constant lr, then 15000 steps at
        # 0.01 * 0.1^floor(t / 2500)
        "la": {
            "batch_labeled": 4,
            "batch_unlabeled": 4,
            "lr": 0.01,
            "bcp_pretrain_steps": 2000,
            "iterations": 15000,
            "lr_policy": "step",
            "lr_steps": (2499, 4999, 7499, 9999, 12499),
            "lr_gamma": 0.1,
            "augment": "rotflip",
        },
    },
}
OWN_RECIPES["mcnet_plus"] = OWN_RECIPES["mcnet"]


def own_settings(method: str, dataset: str) -> dict[str, Any]:
    """The ``own`` recipe's keys for ``method`` on ``dataset``.

    Raises:
        InputError: the method has no own recipe there (n/a in the spec, or not expressible).
    """
    if method not in OWN_RECIPES:
        raise InputError(
            f"config key 'recipe' = own: method '{method}' has no own recipe (baselines only)"
        )
    recipes = OWN_RECIPES[method]
    if dataset not in recipes:
        raise InputError(
            f"config key 'recipe' = own: no own recipe of '{method}' for dataset "
            f"'{dataset}' (available: {', '.join(recipes)}; the spec marks the rest n/a)"
        )
    return dict(recipes[dataset])


def resolve_recipe(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` itself under ``shared``; under ``own`` the original's keys laid over it.

    Idempotent: resolving a resolved config changes nothing.
    """
    if cfg.recipe == "shared":
        return cfg
    return dataclasses.replace(cfg, **own_settings(cfg.method, cfg.dataset))
