"""The method registry: every training method the config's ``method`` key accepts.

One entry per method says everything the code outside the method's own module needs:

- ``cls``: where its :class:`~semiseg3d.methods.base.Method` subclass lives
  (``"package.module:Class"``, imported only when a run needs it, so that reading a config,
  the experiment grid and Snakemake's start-up never import torch); that class builds the
  networks (for training and for ``semiseg3d complexity`` alike), computes the loss of a
  step and holds the inference rule (``inference_nets``, ``prob_fn``, ``default_lcc``);
- ``batch``: its batch rule (checked when a config is validated);
- ``recipes``: the original's published recipe per dataset (``recipe: own``);
- ``report``: its rows in the report's Tables 1-3 (variant, row label, network whose
  complexity the row shows, the paper's quoted ratios) and ``paper_name``, how the paper's
  tables name it;
- ``baseline``: a comparison method (every method but the paper's and SupOnly); its runs
  also log the other post-processing variant.

The config's ``method`` choices, the JSON schema's enum (a test keeps them equal), the
report's method rows, ``semiseg3d complexity`` and the trainer all read :data:`METHODS`.
Adding a method = its module under :mod:`semiseg3d.methods` + one entry here (docs/
architecture.md). This module imports nothing but the standard library and
:mod:`semiseg3d.errors`.

Recipes (baselines spec, section 1): ``shared`` (default) is the paper's protocol, the
same for every method: the config's own steps, batch, schedule and augmentation. ``own``
lays the original's keys over the config (:func:`resolve_recipe`); where the spec marks a
dataset n/a for a method, or the original's recipe cannot be expressed here (BCP on
Pancreas: Adam and epochs), an ``own`` run is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from semiseg3d.errors import InputError

__all__ = [
    "BatchRule",
    "ReportRow",
    "MethodSpec",
    "METHODS",
    "method_names",
    "baseline_names",
    "spec",
    "check_batch",
    "own_settings",
    "resolve_recipe",
]


@dataclass(frozen=True)
class BatchRule:
    """What a method needs of ``batch_labeled`` (B_l) and ``batch_unlabeled`` (B_u).

    Attributes:
        min_unlabeled: smallest B_u (0: the method reads labeled cases only).
        equal: B_l = B_u.
        even: B_l even (the method splits each stream in halves).
        why: the reason, for the error message.
    """

    min_unlabeled: int = 1
    equal: bool = False
    even: bool = False
    why: str = ""


@dataclass(frozen=True)
class ReportRow:
    """A row of the report's Tables 1-3.

    Attributes:
        variant: the canonical variant whose runs fill it (also its key under ``runs`` in
            ``paper_values.yaml``).
        label: the row label.
        model: the network name whose complexity the row shows (``semiseg3d complexity
            --model``; also its key under ``complexity`` in ``paper_values.yaml``).
        paper_ratios: labeled ratios the paper's tables print for it; None = the ratios
            ``paper_values.yaml`` quotes for the variant.
    """

    variant: str
    label: str
    model: str
    paper_ratios: tuple[int, ...] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """One registry entry (module docstring)."""

    cls: str
    paper_name: str
    report: tuple[ReportRow, ...] = ()
    batch: BatchRule = BatchRule()
    recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline: bool = True


_STEP = {"lr_policy": "step", "lr_steps": (2500, 5000), "lr_gamma": 0.1}
_CONSTANT = {"lr_policy": "step", "lr_steps": ()}
_POLY = {"lr_policy": "poly", "poly_power": 0.9}


def _own(iterations: int, augment: str, schedule: Mapping[str, Any], **keys: Any) -> dict:
    """An original's recipe on one dataset: 2 + 2 batches at lr 0.01 unless ``keys`` say."""
    base = {"batch_labeled": 2, "batch_unlabeled": 2, "lr": 0.01}
    return {**base, **schedule, "iterations": iterations, "augment": augment, **keys}


_MCNET_OWN = {"la": _own(15000, "rotflip", _CONSTANT), "pancreas": _own(15000, "none", _CONSTANT)}


def _baseline(name: str, cls: str, label: str, **kw: Any) -> MethodSpec:
    """A comparison method: one Tables 1-3 row, its variant and network named like it."""
    return MethodSpec(cls, label, (ReportRow(name, label, name),), **kw)


#: config ``method`` -> its entry; the report's Tables 1-3 show the rows in this order
#: (SupOnly, the baselines by publication year, the paper's method). Recipes marked
#: "unconfirmed" have no original script for that dataset (baselines spec).
METHODS: dict[str, MethodSpec] = {
    "suponly": MethodSpec(
        "semiseg3d.methods.suponly:SupOnlyMethod",
        "SupOnly",
        (ReportRow("suponly", "SupOnly (V-Net)", "vnet", (10, 20, 100)),),
        BatchRule(min_unlabeled=0),
        baseline=False,
    ),
    "uamt": _baseline(
        "uamt",
        "semiseg3d.methods.uamt:UAMT",
        "UA-MT",
        recipes={
            "la": _own(6000, "rotflip", _STEP),
            "pancreas": _own(6000, "none", _STEP),  # the LA recipe, no rot-flip (unconfirmed)
            # SSL4MIS's 3D script (V-Net kept): 30000 steps, poly, ramp length 200
            "brats": _own(30000, "rotflip", _POLY, rampup_length=200),
        },
    ),
    "dtc": _baseline(
        "dtc",
        "semiseg3d.methods.dtc:DTC",
        "DTC",  # pancreas: unconfirmed
        recipes={"la": _own(6000, "rotflip", _STEP), "pancreas": _own(6000, "none", _STEP)},
    ),
    "mcnet": _baseline(
        "mcnet", "semiseg3d.methods.mcnet:MCNetMethod", "MC-Net", recipes=_MCNET_OWN
    ),
    "mcnet_plus": _baseline(
        "mcnet_plus", "semiseg3d.methods.mcnet:MCNetMethod", "MC-Net+", recipes=_MCNET_OWN
    ),
    "mcf": _baseline(
        "mcf",
        "semiseg3d.methods.mcf:MCF",
        "MCF",  # pancreas: unconfirmed
        recipes={"la": _own(6000, "none", _STEP), "pancreas": _own(6000, "none", _STEP)},
    ),
    # 4 + 4 (halves of 2), 2000 pre-training steps at constant lr, then 15000 steps at
    # 0.01 * 0.1^floor(t / 2500)
    "bcp": _baseline(
        "bcp",
        "semiseg3d.methods.bcp:BCP",
        "BCP",
        batch=BatchRule(equal=True, even=True, why="halves a, b"),
        recipes={
            "la": _own(
                15000,
                "rotflip",
                {"lr_policy": "step", "lr_steps": (2499, 4999, 7499, 9999, 12499), "lr_gamma": 0.1},
                batch_labeled=4,
                batch_unlabeled=4,
                bcp_pretrain_steps=2000,
            )
        },
    ),
    "dual": MethodSpec(
        "semiseg3d.methods.dual:DualMethod",
        "Ours",
        (
            ReportRow("full", "Ours", "dual", (10, 20)),
            ReportRow("code_faithful", "Ours (code-faithful)", "dual", ()),
        ),
        baseline=False,
    ),
}


class _HasMethod(Protocol):
    method: str
    recipe: str
    dataset: str


def method_names() -> tuple[str, ...]:
    """Every registered method, in registry order."""
    return tuple(METHODS)


def baseline_names() -> tuple[str, ...]:
    """The comparison methods (every method but the paper's and SupOnly)."""
    return tuple(name for name, entry in METHODS.items() if entry.baseline)


def spec(name: str) -> MethodSpec:
    """The entry of method ``name``.

    Raises:
        InputError: no such method.
    """
    entry = METHODS.get(name)
    if entry is None:
        raise InputError(f"config key 'method' must be one of {list(METHODS)}, got {name!r}")
    return entry


def check_batch(method: str, batch_labeled: int, batch_unlabeled: int) -> None:
    """Refuse a batch that method ``method``'s :class:`BatchRule` does not allow.

    Raises:
        InputError: naming the key and the method.
    """
    rule = spec(method).batch
    if batch_unlabeled < rule.min_unlabeled:
        raise InputError(
            f"config key 'batch_unlabeled' must be >= {rule.min_unlabeled} for method '{method}'"
        )
    if (rule.equal and batch_labeled != batch_unlabeled) or (rule.even and batch_labeled % 2):
        need = "batch_labeled = batch_unlabeled" if rule.equal else "batch_labeled"
        if rule.even:
            need += ", an even number"
        why = f" ({rule.why})" if rule.why else ""
        raise InputError(
            f"method '{method}' needs {need}{why}; got {batch_labeled} + {batch_unlabeled}"
        )


def own_settings(method: str, dataset: str) -> dict[str, Any]:
    """The ``own`` recipe's keys for ``method`` on ``dataset``.

    Raises:
        InputError: the method has no own recipe there (n/a in the spec, or not expressible).
    """
    recipes = spec(method).recipes
    if not recipes:
        raise InputError(
            f"config key 'recipe' = own: method '{method}' has no own recipe (baselines only)"
        )
    if dataset not in recipes:
        raise InputError(
            f"config key 'recipe' = own: no own recipe of '{method}' for dataset "
            f"'{dataset}' (available: {', '.join(recipes)}; the spec marks the rest n/a)"
        )
    return dict(recipes[dataset])


def resolve_recipe(cfg: Any) -> Any:
    """A run config itself under ``recipe: shared``; under ``own`` the original's keys laid
    over it (a new config of the same dataclass). Idempotent.

    Args:
        cfg: a :class:`~semiseg3d.config.run.TrainConfig`.
    """
    if cfg.recipe == "shared":
        return cfg
    return dataclasses.replace(cfg, **own_settings(cfg.method, cfg.dataset))
