"""The method registry: every training method the config's ``method`` key accepts.

One entry per method says everything the code outside the method's own module needs:

- ``cls``: where its :class:`~semiseg3d.methods.base.Method` subclass lives
  (``"package.module:Class"``, imported only when a run needs it, so that reading a config,
  the experiment grid and Snakemake's start-up never import torch); that class builds the
  networks (for training and for ``semiseg3d complexity`` alike), computes the loss of a
  step and holds the inference rule (``inference_nets``, ``prob_fn``, ``default_lcc``);
- ``batch``: its batch rule (checked when a config is validated), with conditional
  sub-rules that apply under some values of its options;
- ``options``: the method's own settings (config key ``method_options``, a mapping): name,
  allowed values or kind, default (:class:`Option`); the method's module reads them as its
  ``<Name>Settings`` dataclass (:func:`method_options`);
- ``preset``: config keys a preset of another method's class fixes (LUSEG = the dual
  network with fixed switches, :data:`LUSEG_PRESET`), laid over the defaults and refused
  when set otherwise (:func:`apply_preset`);
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
    "Option",
    "ReportRow",
    "MethodSpec",
    "METHODS",
    "method_names",
    "baseline_names",
    "spec",
    "check_batch",
    "method_options",
    "preset_of",
    "apply_preset",
    "own_settings",
    "resolve_recipe",
    "scale_steps",
]


@dataclass(frozen=True)
class BatchRule:
    """What a method needs of ``batch_labeled`` (B_l) and ``batch_unlabeled`` (B_u)
    (baselines spec section 2, baselines-more spec section 2). B_l >= 1 always.

    Attributes:
        min_unlabeled: smallest B_u (0: the method reads labeled cases only).
        equal: B_l = B_u.
        even: B_l even (the method splits each stream in halves).
        why: the reason, for the error message.
        max_unlabeled: largest B_u (None: no limit).
        when: ``(option, value)`` pairs: the rule applies only when every one of the
            method's options has that value (empty: always).
        also: further rules (usually with ``when``) checked after this one.
    """

    min_unlabeled: int = 1
    equal: bool = False
    even: bool = False
    why: str = ""
    max_unlabeled: int | None = None
    when: tuple[tuple[str, Any], ...] = ()
    also: tuple[BatchRule, ...] = ()


@dataclass(frozen=True)
class Option:
    """One of a method's own settings (config key ``method_options.<name>``).

    Attributes:
        name: the key under ``method_options``.
        default: its value when not given.
        choices: the allowed values (kind ``choice``).
        kind: ``choice`` (one of ``choices``), ``bool``, or ``number_or_null`` (a number
            >= 0 or null).
        doc: one line for the README's reference.
    """

    name: str
    default: Any
    choices: tuple[Any, ...] = ()
    kind: str = "choice"
    doc: str = ""

    def check(self, method: str, value: Any) -> Any:
        """``value`` if allowed; else :class:`InputError` naming ``method_options.<name>``."""
        key = f"config key 'method_options.{self.name}'"
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InputError(f"{key} must be true or false (method '{method}'), got {value!r}")
        elif self.kind == "number_or_null":
            ok = value is None or (
                isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            )
            if not ok:
                raise InputError(
                    f"{key} must be a number >= 0 or null (method '{method}'), got {value!r}"
                )
        elif isinstance(value, bool) or not any(
            value == c and type(value) is type(c) for c in self.choices
        ):
            raise InputError(
                f"{key} must be one of {list(self.choices)} (method '{method}'), got {value!r}"
            )
        return value


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
        complexity_note: a footnote where the paper's complexity figure does not describe
            the networks the released code (and this project) trains (baselines-more spec
            section 10); shown under every table that has the row.
    """

    variant: str
    label: str
    model: str
    paper_ratios: tuple[int, ...] | None = None
    complexity_note: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """One registry entry (module docstring)."""

    cls: str
    paper_name: str
    report: tuple[ReportRow, ...] = ()
    batch: BatchRule = BatchRule()
    recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline: bool = True
    options: tuple[Option, ...] = ()
    preset: Mapping[str, Any] = field(default_factory=dict)
    #: ``(option, value)`` -> config keys laid over :attr:`preset` under that option value
    option_presets: Mapping[tuple[str, Any], Mapping[str, Any]] = field(default_factory=dict)


_STEP = {"lr_policy": "step", "lr_steps": (2500, 5000), "lr_gamma": 0.1}
_CONSTANT = {"lr_policy": "step", "lr_steps": ()}
_POLY = {"lr_policy": "poly", "poly_power": 0.9}
#: the originals' counter: lr x 0.1 after the 2500th step (t = 2499), every 2500 steps
_STEP_2499 = {"lr_policy": "step", "lr_steps": (2499, 4999), "lr_gamma": 0.1}
_STEP_2499_15000 = {
    "lr_policy": "step",
    "lr_steps": (2499, 4999, 7499, 9999, 12499),
    "lr_gamma": 0.1,
}


def _own(iterations: int, augment: str, schedule: Mapping[str, Any], **keys: Any) -> dict:
    """An original's recipe on one dataset: 2 + 2 batches at lr 0.01 unless ``keys`` say."""
    base = {"batch_labeled": 2, "batch_unlabeled": 2, "lr": 0.01}
    return {**base, **schedule, "iterations": iterations, "augment": augment, **keys}


_DTC_OWN = {"la": _own(6000, "rotflip", _STEP), "pancreas": _own(6000, "none", _STEP)}
_MCF_OWN = {"la": _own(6000, "none", _STEP), "pancreas": _own(6000, "none", _STEP)}
_MCNET_OWN = {"la": _own(15000, "rotflip", _CONSTANT), "pancreas": _own(15000, "none", _CONSTANT)}


def _baseline(name: str, cls: str, label: str, note: str = "", **kw: Any) -> MethodSpec:
    """A comparison method: one Tables 1-3 row, its variant and network named like it
    (``note``: the row's complexity footnote)."""
    return MethodSpec(cls, label, (ReportRow(name, label, name, None, note),), **kw)


#: LUSEG (baselines-more spec 9): the dual network as released by LUSEG = ``code_faithful``
#: without the uncertainty-rectified loss and the cosine consistency, alpha 20, EFS / PGL
#: entropies of the probabilities (only the logged EFS and PGL values change)
LUSEG_PRESET: Mapping[str, Any] = {
    "mode": "code_faithful",
    "ic_distance": "none",
    "use_ue": False,
    "alpha": 20.0,
    "efs_entropy_input": "probs",
}
#: ``method_options.grad: paper``: the unlabelled CE and the prototype term with gradient,
#: as the LUSEG paper describes them (unconfirmed reading)
LUSEG_PAPER_GRAD: Mapping[str, Any] = {
    "mode": "paper",
    "use_cps": False,
    "pgl_require_agreement": False,
    "pl_rampup": "none",
}

_ONE_EACH = BatchRule(min_unlabeled=1, why="a labeled and an unlabeled sample per step")

#: config ``method`` -> its entry; the report's Tables 1-3 show the rows in this order
#: (SupOnly, the baselines in the order of the paper's Tables 1-3, ours). Recipes marked
#: "unconfirmed" have no original script for that dataset (baselines spec, baselines-more
#: spec); a dataset without an own recipe is n/a there.
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
    "sassnet": _baseline(
        "sassnet",
        "semiseg3d.methods.sassnet:SASSNetMethod",
        "SASSNet",
        note=(
            "SASSNet: the paper's 20.46 M counts segmenter + discriminator (as here); its "
            "15.41 G MACs count the discriminator alone (baselines-more spec 10)."
        ),
        batch=BatchRule(min_unlabeled=1, why="its discriminator tells labeled from unlabeled"),
        recipes={
            "la": _own(6000, "rotflip", _STEP_2499),
            "pancreas": _own(6000, "none", _STEP_2499),  # the LA recipe, crop only (unconfirmed)
        },
        options=(
            Option(
                "w_adv",
                None,
                kind="number_or_null",
                doc="final adversarial weight; null = 0.015 up to 15 % labeled, 0.01 above",
            ),
        ),
    ),
    "dtc": _baseline(
        "dtc",
        "semiseg3d.methods.dtc:DTC",
        "DTC",  # pancreas: unconfirmed
        recipes=_DTC_OWN,
    ),
    "urpc": _baseline(
        "urpc",
        "semiseg3d.methods.urpc:URPC",
        "URPC",
        note=(
            "URPC: the paper's 5.88 M is SSL4MIS's 3-D U-Net; the project trains the V-Net "
            "with the same three deep-supervision heads (baselines-more spec 5)."
        ),
        batch=_ONE_EACH,
        # the BraTS shell's values: 30000 steps, lr 0.1 poly, ramp length 400
        recipes={"brats": _own(30000, "rotflip", _POLY, lr=0.1, rampup_length=400)},
        options=(
            Option("infer", "main", ("main", "mean"), doc="main head (released) | mean of the 4"),
        ),
    ),
    "mcnet": _baseline(
        "mcnet", "semiseg3d.methods.mcnet:MCNetMethod", "MC-Net", recipes=_MCNET_OWN
    ),
    "ssnet": _baseline(
        "ssnet",
        "semiseg3d.methods.ssnet:SSNetMethod",
        "SS-Net",
        batch=_ONE_EACH,
        recipes={
            "la": _own(15000, "rotflip", _STEP_2499_15000),
            "pancreas": _own(15000, "none", _STEP_2499_15000),  # unconfirmed substitute
        },
        options=(
            Option(
                "eps_rule",
                "per_voxel",
                ("per_voxel", "fixed"),
                doc="VAT xi, eps: per-voxel size of the 112x112x80 original | fixed 10",
            ),
            Option("bg_memory", False, kind="bool", doc="also fill the background memory"),
            Option(
                "memory_pick",
                "lowest",
                ("lowest", "highest"),
                doc="which 32 memory rows: lowest selector scores (code) | highest",
            ),
        ),
    ),
    "mcnet_plus": _baseline(
        "mcnet_plus", "semiseg3d.methods.mcnet:MCNetMethod", "MC-Net+", recipes=_MCNET_OWN
    ),
    "mcf": _baseline(
        "mcf",
        "semiseg3d.methods.mcf:MCF",
        "MCF",  # pancreas: unconfirmed
        recipes=_MCF_OWN,
    ),
    "cpcl": _baseline(
        "cpcl",
        "semiseg3d.methods.cpcl:CPCL",
        "CPCL",
        note=(
            "CPCL: the paper's 18.88 M counts student + EMA teacher (as here, UA-MT's "
            "convention); inference runs the student alone (9.45 M)."
        ),
        batch=BatchRule(
            min_unlabeled=2,
            equal=True,
            why="teacher forward on the unlabeled slice, prototypes paired by sample",
        ),
        recipes={"la": _own(10000, "rotflip", _POLY)},
        options=(
            Option(
                "proto_grad",
                False,
                kind="bool",
                doc="prototype terms with gradient (paper's intent); false = released (inert)",
            ),
            Option("feature", "x8", ("x8", "x5"), doc="feature map of the prototypes"),
        ),
    ),
    "acmt": _baseline(
        "acmt",
        "semiseg3d.methods.acmt:ACMT",
        "AC-MT",
        note=(
            "AC-MT: the paper's 18.88 M counts student + EMA teacher (as here); inference runs "
            "the student alone (9.45 M)."
        ),
        batch=BatchRule(
            min_unlabeled=2,
            why="its teacher runs on the unlabeled slice alone",
            also=(
                BatchRule(
                    max_unlabeled=2,
                    when=(("variant", "perr"), ("perr_entropy", "code")),
                    why="P-Err's released entropy broadcast; use perr_entropy: fixed",
                ),
            ),
        ),
        recipes={"la": _own(8000, "rotflip", _POLY)},
        options=(
            Option("variant", "ent", ("ent", "mu", "perr", "serr"), doc="ambiguity selector"),
            Option(
                "mu_net",
                "student",
                ("student", "teacher"),
                doc="MU's stochastic passes: student (released) | teacher",
            ),
            Option(
                "perr_entropy",
                "code",
                ("code", "fixed"),
                doc="P-Err's entropy term: released broadcast (B_u <= 2) | per sample",
            ),
        ),
    ),
    # 4 + 4 (halves of 2), 2000 pre-training steps at constant lr, then 15000 steps at
    # 0.01 * 0.1^floor(t / 2500)
    "bcp": _baseline(
        "bcp",
        "semiseg3d.methods.bcp:BCP",
        "BCP",
        note=(
            "BCP: the paper's 28.32 M matches neither the student nor student + teacher "
            "(unexplained, baselines spec 6)."
        ),
        batch=BatchRule(equal=True, even=True, why="halves a, b"),
        recipes={
            "la": _own(
                15000,
                "rotflip",
                _STEP_2499_15000,
                batch_labeled=4,
                batch_unlabeled=4,
                bcp_pretrain_steps=2000,
            )
        },
    ),
    "luseg": MethodSpec(
        "semiseg3d.methods.dual:DualMethod",
        "LUSEG",
        (ReportRow("luseg", "LUSEG", "dual"),),
        recipes={
            "la": _own(6000, "none", _STEP),
            "pancreas": _own(6000, "none", _STEP),
        },
        options=(
            Option(
                "grad",
                "code",
                ("code", "paper"),
                doc="code: as released (unlabeled terms inert) | paper: with gradient",
            ),
        ),
        preset=LUSEG_PRESET,
        option_presets={("grad", "paper"): LUSEG_PAPER_GRAD},
    ),
    "mlrpl": _baseline(
        "mlrpl",
        "semiseg3d.methods.mlrpl:MLRPL",
        "ML-RPL",
        note=(
            "ML-RPL: the paper's 15.25 M is three decoders; the released code trains two "
            "(12.35 M, counted here; method_options.decoders: 3 gives the paper's count)."
        ),
        batch=_ONE_EACH,
        recipes={
            "la": _own(15000, "rotflip", _CONSTANT),
            "pancreas": _own(15000, "none", _CONSTANT),
        },
        options=(
            Option("decoders", 2, (2, 3), doc="K decoders: 2 (released) | 3 (paper's 15.25 M)"),
            Option(
                "ce_input",
                "logits",
                ("logits", "probs"),
                doc="mutual CE on logits (current script) | probabilities (first upload)",
            ),
        ),
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


def check_batch(
    method: str,
    batch_labeled: int,
    batch_unlabeled: int,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Refuse a batch that method ``method``'s :class:`BatchRule` (and those of its
    sub-rules whose ``when`` holds for ``options``) does not allow.

    Args:
        method: a registered method.
        batch_labeled, batch_unlabeled: B_l, B_u.
        options: the run's ``method_options`` (defaults filled in where absent).

    Raises:
        InputError: naming the key and the method.
    """
    values = method_options(method, options or {})
    pending = [spec(method).batch]
    while pending:
        rule = pending.pop(0)
        if any(values.get(k) != v for k, v in rule.when):
            continue
        _check_rule(method, rule, batch_labeled, batch_unlabeled)
        pending.extend(rule.also)


def _check_rule(method: str, rule: BatchRule, batch_labeled: int, batch_unlabeled: int) -> None:
    why = f" ({rule.why})" if rule.why else ""
    under = ""
    if rule.when:
        under = " with " + ", ".join(f"method_options.{k}: {v}" for k, v in rule.when)
    if batch_unlabeled < rule.min_unlabeled:
        raise InputError(
            f"config key 'batch_unlabeled' must be >= {rule.min_unlabeled} for method "
            f"'{method}'{under}{why}; got {batch_unlabeled}"
        )
    if rule.max_unlabeled is not None and batch_unlabeled > rule.max_unlabeled:
        raise InputError(
            f"config key 'batch_unlabeled' must be <= {rule.max_unlabeled} for method "
            f"'{method}'{under}{why}; got {batch_unlabeled}"
        )
    if (rule.equal and batch_labeled != batch_unlabeled) or (rule.even and batch_labeled % 2):
        need = "batch_labeled = batch_unlabeled" if rule.equal else "batch_labeled"
        if rule.even:
            need += ", an even number"
        raise InputError(
            f"method '{method}'{under} needs {need}{why}; got {batch_labeled} + {batch_unlabeled}"
        )


def method_options(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``method_options`` of a run, validated against the options method ``method``
    declares, with the defaults filled in.

    Raises:
        InputError: an option the method does not declare, or a value it does not allow
            (one line naming ``method_options.<key>``).
    """
    if not isinstance(given, Mapping):
        raise InputError(f"config key 'method_options' must be a mapping, got {given!r}")
    declared = {opt.name: opt for opt in spec(method).options}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        allowed = ", ".join(declared) if declared else "none"
        raise InputError(
            f"config key 'method_options.{unknown[0]}': method '{method}' has no such option "
            f"(its options: {allowed})"
        )
    return {
        name: opt.check(method, given[name]) if name in given else opt.default
        for name, opt in declared.items()
    }


def preset_of(method: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config keys method ``method``'s preset fixes under ``options`` ({} for a method
    that is not a preset): :attr:`MethodSpec.preset` with the option presets laid over it."""
    entry = spec(method)
    values = method_options(method, options or {})
    out = dict(entry.preset)
    for (name, value), keys in entry.option_presets.items():
        if values.get(name) == value:
            out.update(keys)
    return out


def apply_preset(
    method: str,
    options: Mapping[str, Any],
    current: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """The keys to change so that a config follows method ``method``'s preset: every preset
    key still at its default takes the preset's value; one set to anything else is refused.

    Args:
        method: a registered method.
        options: the run's ``method_options``.
        current: the config's values of (at least) the preset's keys.
        defaults: the config's defaults of those keys.

    Raises:
        InputError: a preset key set to another value (one line naming key and method).
    """
    changes: dict[str, Any] = {}
    for key, value in preset_of(method, options).items():
        now = current[key]
        if now == value:
            continue
        if now != defaults[key]:
            raise InputError(
                f"config key '{key}' = {now!r}: method '{method}' is a preset that fixes "
                f"{key}: {value!r} (use method 'dual' for other settings)"
            )
        changes[key] = value
    return changes


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
    return dataclasses.replace(
        cfg, **scale_steps(own_settings(cfg.method, cfg.dataset), cfg.recipe_scale)
    )


#: the keys of a recipe that count steps (scaled by ``recipe_scale``)
_STEP_KEYS = ("iterations", "bcp_pretrain_steps")


def scale_steps(keys: Mapping[str, Any], scale: float) -> dict[str, Any]:
    """``keys`` with their step counts times ``scale``, rounded: ``iterations`` and
    ``bcp_pretrain_steps`` (at least 1 and 0), each of ``lr_steps`` (at least 1). Other
    keys, the ramp's unit and length included (the config's ``rampup_unit`` scales the
    ramp), are kept. ``scale`` 1 returns the keys unchanged.

    Example: MC-Net's LA recipe (15000 iterations, constant lr) at 0.1 runs 1500
    iterations; BCP's (2000 + 15000, lr x 0.1 after t = 2499, 4999, ...) runs 200 + 1500
    with steps at 250, 500, 750, 1000, 1250.
    """
    out = dict(keys)
    if scale == 1.0:
        return out
    for name in _STEP_KEYS:
        if name in out:
            out[name] = max(1 if name == "iterations" else 0, round(out[name] * scale))
    if "lr_steps" in out:
        out["lr_steps"] = tuple(max(1, round(s * scale)) for s in out["lr_steps"])
    return out
