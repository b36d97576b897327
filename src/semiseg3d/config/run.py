"""Training configuration: one typed, validated record per run.

A run's config is a flat YAML mapping whose keys are the fields of :class:`TrainConfig`.
The ``method`` key's choices, batch rules, recipes, the options of ``method_options`` (a
mapping of the method's own settings) and presets come from the method registry
(:mod:`semiseg3d.config.registry`).
``semiseg3d run-config`` writes one per grid point from ``params.yaml``; ``semiseg3d train
--config FILE --set KEY=VALUE`` reads it. Unknown keys and out-of-range values are
:class:`~semiseg3d.errors.InputError` naming the key. Defaults are the paper's LA settings
(spec section 8).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import yaml

from semiseg3d.config.registry import apply_preset, check_batch, method_names, preset_of
from semiseg3d.errors import InputError
from semiseg3d.io.yamlio import read_yaml

__all__ = [
    "TrainConfig",
    "load_config",
    "config_from_mapping",
    "parse_overrides",
    "lay_overrides",
    "OPTION_PREFIX",
    "labeled_count",
    "labeled_from_ratio",
    "RUNTIME_KEY",
    "AMP_CHOICES",
]

#: key of the resolved runtime record in a run's ``config.yaml`` (ignored when read back)
RUNTIME_KEY = "runtime"
#: a method option is named ``method_options.<name>`` in ``--set``
OPTION_PREFIX = "method_options."
#: the choices of ``amp`` (resolved by :func:`semiseg3d.accel.resolve_runtime`)
AMP_CHOICES = ("auto", "none", "bf16", "fp16")

_CHOICES: dict[str, tuple[Any, ...]] = {
    "recipe": ("shared", "own"),
    "init": ("auto", "kaiming", "torch"),
    "augment": ("none", "rotflip"),
    "mcnet_infer": ("decoder1", "mean"),
    "mode": ("paper", "code_faithful"),
    "ic_distance": ("cosine", "mse", "none"),
    "cps_target": ("threshold", "argmax", "confident"),
    "pl_rampup": ("none", "sigmoid"),
    "cr_distance": ("mse", "kl"),
    "lr_policy": ("step", "poly"),
    "pgl_proto_term_sign": (1, -1),
    "perturbation": ("none", "gaussian"),
    "device": ("auto", "cpu", "cuda"),
    "amp": AMP_CHOICES,
    "channels_last": (True, False, "auto"),
    "compile": (True, False, "auto"),
    "cache_volumes": (True, False, "auto"),
    "eval_subnet": ("both", "a", "b"),
    "efs_entropy_input": ("logits", "probs"),
}

#: keys that take true, false or "auto"
_TRISTATE = ("channels_last", "cache_volumes", "compile")

#: key -> (low, high, low inclusive, high inclusive); every numeric key is here, or checked
#: in :func:`_validate` (labeled, patch, stride, lr_steps) or listed in _CHOICES
#: (pgl_proto_term_sign). NaN is outside every range.
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "seed": (0, 2**32 - 1, True, True),  # the streams use its low 32 bits (seeding.derive_seed)
    "tau": (0.5, 1.0, True, True),
    "lam": (0.0, math.inf, True, False),
    "T": (0.0, math.inf, False, False),
    "alpha": (0.0, 100.0, True, True),
    "tau_cps": (0.5, 1.0, True, True),
    "labeled_ratio": (0.0, 1.0, False, True),
    "iterations": (1, math.inf, True, False),
    "batch_labeled": (1, math.inf, True, False),
    "batch_unlabeled": (0, math.inf, True, False),
    "lr": (0.0, math.inf, False, False),
    "lr_gamma": (0.0, 1.0, False, True),
    "poly_power": (0.0, math.inf, False, False),
    "momentum": (0.0, 1.0, True, False),
    "weight_decay": (0.0, math.inf, True, False),
    "rampup_max": (0.0, math.inf, True, False),
    "rampup_length": (0, math.inf, True, False),
    "rampup_unit": (1, math.inf, True, False),
    "num_workers": (0, math.inf, True, False),
    "checkpoint_every": (1, math.inf, True, False),
    "downsample": (1, 16, True, True),
    "noise_std": (0.0, math.inf, True, False),
    "bcp_pretrain_steps": (0, math.inf, True, False),
    "recipe_scale": (0.0, 1.0, False, True),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Spatial tuples are in array axis order of the h5
    volumes (LA: x, y, z), in voxels."""

    # -- data ---------------------------------------------------------------------------
    dataset: str = "la"
    data_dir: str = ""  #: folder of preprocessed volumes (<ID>.h5 or <ID>/mri_norm2.h5)
    train_list: str = ""  #: text file, one case id per line (labeled = the first N)
    test_list: str = ""
    labeled: int | None = None  #: number of labeled cases (first N of train_list)
    labeled_ratio: float | None = None  #: or a fraction of train_list (round half up)
    patch: tuple[int, int, int] = (112, 112, 80)
    stride: tuple[int, int, int] = (18, 18, 4)
    downsample: int = 1  #: integer spatial downsampling on load (reduced-scale runs)
    # -- method -------------------------------------------------------------------------
    method: str = "dual"  #: dual (the paper's method), suponly, or a baseline (config.registry)
    recipe: str = "shared"  #: baselines: shared (the paper's protocol) | own (the original's)
    #: own recipes at reduced scale: the original's step counts (iterations, lr steps, BCP's
    #: pre-training) times this, rounded (0.1 at LA-lite's 600 of 6000 steps); own only
    recipe_scale: float = 1.0
    augment: str = (
        "none"  #: none (random crop only) | rotflip (k x 90 deg rotation + flip, then crop)
    )
    bcp_pretrain_steps: int = 2000  #: BCP: labeled-only copy-paste pre-training steps
    mcnet_infer: str = "decoder1"  #: MC-Net(+): decoder1 (published) | mean of the decoders
    mcnet_detach_target: bool = False  #: MC-Net(+): detach the sharpened targets
    #: the method's own settings (SS-Net, URPC, SASSNet, CPCL, AC-MT, ML-RPL, LUSEG): names,
    #: values and defaults declared by its registry entry (README: method options)
    method_options: dict[str, Any] = field(default_factory=dict)
    #: initialisation of the trained networks and teachers: auto (the method's original:
    #: PyTorch's defaults or Kaiming-normal, docs/baselines.md) | kaiming (spec 1.4) | torch
    init: str = "auto"
    mode: str = "paper"  #: paper (spec 3) or code_faithful (spec 2)
    use_cr: bool = True
    use_cps: bool = True
    use_efs: bool = True
    use_ue: bool = True
    use_pgl: bool = True
    ic_distance: str = "cosine"
    #: code_faithful: EFS / PGL entropies of the raw logits (AIPMLab's script) | of the
    #: probabilities (LUSEG); changes only the logged EFS and PGL values
    efs_entropy_input: str = "logits"
    cr_distance: str = "mse"
    pgl_third_term: bool = True
    pgl_proto_term_sign: int = 1
    pgl_require_agreement: bool = True
    ue_temperature_in_kl: bool = True
    tau: float = 0.6
    lam: float = 0.5
    T: float = 0.5
    alpha: float = 70.0
    tau_cps: float = 0.6
    #: CPS target: argmax (default, chosen on LA-lite-val) | threshold (the paper's sentence
    #: read literally) | confident (see losses.cce and docs/method.md)
    cps_target: str = "argmax"
    #: weight of CPS, EFS and UE: sigmoid ramp-up to 1 (default, chosen on LA-lite-val) |
    #: none (1 from the first iteration, the paper read literally)
    pl_rampup: str = "sigmoid"
    perturbation: str = "none"  #: per-net input perturbation (off in the paper's code)
    noise_std: float = 0.1
    # -- optimisation -------------------------------------------------------------------
    iterations: int = 6000
    batch_labeled: int = 2
    batch_unlabeled: int = 2
    lr: float = 0.01
    lr_policy: str = "step"
    lr_steps: tuple[int, ...] = (2500, 5000)
    lr_gamma: float = 0.1
    poly_power: float = 0.9
    momentum: float = 0.9
    weight_decay: float = 1e-4
    rampup_max: float = 0.1
    rampup_length: int = 40
    rampup_unit: int = 150
    # -- runtime ------------------------------------------------------------------------
    seed: int = 1337
    num_workers: int = 2
    device: str = "auto"
    amp: str = "none"  #: auto | none (float32) | bf16 | fp16 (see semiseg3d.accel)
    channels_last: bool | str = False  #: true | false | auto (see semiseg3d.accel)
    compile: bool | str = False  #: on (true) | off (false) | auto (see semiseg3d.compiled)
    cache_volumes: bool | str = "auto"  #: keep training volumes in memory (auto: if <= 4 GiB)
    checkpoint_every: int = 500
    keep_checkpoint: bool = False  #: keep checkpoint.pt after the run finishes
    # -- evaluation ---------------------------------------------------------------------
    eval_subnet: str = "both"
    postprocess_lcc: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  #: free-form labels (variant name...)

    def __post_init__(self) -> None:
        _apply_preset(self)
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able dict (tuples as lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


#: every field's default (``method_options`` and ``extra``: empty mappings)
_FIELD_DEFAULTS: dict[str, Any] = {
    f.name: {} if f.default is dataclasses.MISSING else f.default
    for f in dataclasses.fields(TrainConfig)
}


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    where = source if source == f"--set {name}" else f"{source}: key '{name}'"
    if name in _TRISTATE:
        if name == "compile" and value in ("on", "off"):  # YAML reads unquoted on/off as bools
            value = value == "on"
        if (
            value not in (True, False, "auto")
            or isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            raise InputError(f"{where} must be true, false or auto, got {value!r}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise InputError(f"{where} must be a list of integers, got {value!r}")
        if name in ("patch", "stride") and len(value) != 3:
            raise InputError(f"{where} must have 3 entries, got {len(value)}")
        return tuple(value)
    if isinstance(default, int) or name == "labeled":
        if value is None and name == "labeled":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float) or name == "labeled_ratio":
        if value is None and name == "labeled_ratio":
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{where} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InputError(f"{where} must be a string, got {value!r}")
        return value
    if isinstance(default, dict) or name in ("extra", "method_options"):
        if not isinstance(value, dict):
            raise InputError(f"{where} must be a mapping, got {value!r}")
        return value
    return value


def _apply_preset(cfg: TrainConfig) -> None:
    """A preset method (LUSEG): its fixed keys that are still at their defaults take the
    preset's values; other values are refused (:func:`~semiseg3d.config.registry.apply_preset`)."""
    if cfg.method not in method_names():
        return  # refused by _validate
    keys = preset_of(cfg.method, cfg.method_options)
    if not keys:
        return
    current = {k: getattr(cfg, k) for k in keys}
    defaults = {k: _FIELD_DEFAULTS[k] for k in keys}
    for key, value in apply_preset(cfg.method, cfg.method_options, current, defaults).items():
        object.__setattr__(cfg, key, value)


def _validate(cfg: TrainConfig) -> None:
    for name, choices in {"method": method_names(), **_CHOICES}.items():
        value = getattr(cfg, name)
        if value not in choices:
            raise InputError(f"config key '{name}' must be one of {list(choices)}, got {value!r}")
    for name, (lo, hi, lo_inc, hi_inc) in _RANGES.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        ok = (value >= lo if lo_inc else value > lo) and (value <= hi if hi_inc else value < hi)
        if not ok:
            lb, rb = "[" if lo_inc else "(", "]" if hi_inc else ")"
            raise InputError(f"config key '{name}' = {value} is outside {lb}{lo}, {hi}{rb}")
    if cfg.recipe_scale != 1.0 and cfg.recipe != "own":
        raise InputError(
            f"config key 'recipe_scale' = {cfg.recipe_scale} scales an own recipe; "
            f"it needs 'recipe' = own (got {cfg.recipe!r})"
        )
    if cfg.labeled is not None and cfg.labeled < 1:
        raise InputError(f"config key 'labeled' must be >= 1, got {cfg.labeled}")
    if cfg.labeled is not None and cfg.labeled_ratio is not None:
        raise InputError("config keys 'labeled' and 'labeled_ratio' are exclusive; set one")
    for name in ("patch", "stride"):
        if any(v < 1 for v in getattr(cfg, name)):
            raise InputError(
                f"config key '{name}' must be positive, got {list(getattr(cfg, name))}"
            )
    wide = [axis for axis, (s, q) in enumerate(zip(cfg.stride, cfg.patch, strict=True)) if s > q]
    if wide:
        raise InputError(
            f"config key 'stride' = {list(cfg.stride)} exceeds 'patch' = {list(cfg.patch)} on "
            f"axis {wide[0]}: the voxels between two windows would get no prediction"
        )
    if any(s < 1 for s in cfg.lr_steps):
        raise InputError(f"config key 'lr_steps' must be iterations >= 1, got {list(cfg.lr_steps)}")
    bad = [v for v in cfg.patch if v % 16]
    if bad:
        raise InputError(
            f"config key 'patch' = {list(cfg.patch)}: every axis must be a multiple of 16"
        )
    if list(cfg.lr_steps) != sorted(cfg.lr_steps):
        raise InputError(f"config key 'lr_steps' must be increasing, got {list(cfg.lr_steps)}")
    check_batch(cfg.method, cfg.batch_labeled, cfg.batch_unlabeled, cfg.method_options)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; values are read as YAML (``true``, ``0.5``, ``[96,96,96]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise InputError(
                f"--set {item!r}: value is not valid YAML ({exc.__class__.__name__})"
            ) from exc
    return out


def config_from_mapping(
    data: dict[str, Any], source: str = "config", key_sources: dict[str, str] | None = None
) -> TrainConfig:
    """Build a validated :class:`TrainConfig` from a mapping; ``source`` names it in errors.

    A ``runtime`` key (what a finished run resolved ``device``, ``amp`` and
    ``channels_last`` to, written into the run's ``config.yaml``) is a record, not a
    setting, and is ignored.

    Args:
        data: config keys and values.
        source: what errors name (the config file).
        key_sources: keys set elsewhere, and what errors about them name instead of
            ``source`` (``--set KEY`` for an override).
    """
    key_sources = key_sources or {}
    data = {k: v for k, v in data.items() if k != RUNTIME_KEY}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        named = [key_sources[k] for k in unknown if k in key_sources]
        raise InputError(f"{', '.join(named) if named else source}: unknown key(s) {unknown}")
    _check_explicit_preset(data, source, key_sources)
    defaults = TrainConfig()
    kwargs = {}
    for name, value in data.items():
        where = key_sources.get(name, source)
        kwargs[name] = _coerce(name, value, getattr(defaults, name), where)
    try:
        return TrainConfig(**kwargs)
    except InputError as exc:
        # name where the offending key was set: the file, or --set KEY
        message = str(exc)
        # (a method option names its key as 'method_options.<name>')
        keys = [k.split(".")[0] for k in re.findall(r"config keys? '([\w.]+)'", message)]
        where = next((key_sources[k] for k in keys if k in key_sources), source)
        if where == "config":
            raise
        raise InputError(f"{where}: {message}") from exc


def _check_explicit_preset(data: dict[str, Any], source: str, key_sources: dict[str, str]) -> None:
    """A preset method's fixed key written out with another value (even the default) is
    refused, naming where it was set."""
    method, options = data.get("method"), data.get("method_options") or {}
    if method not in method_names() or not isinstance(options, dict):
        return
    try:
        keys = preset_of(method, options)
    except InputError:
        return  # refused with its own message when the config is built
    for key, value in keys.items():
        if key in data and data[key] != value:
            where = key_sources.get(key, source)
            raise InputError(
                f"{where}: config key '{key}' = {data[key]!r}: method '{method}' is a preset "
                f"that fixes {key}: {value!r} (use method 'dual' for other settings)"
            )


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config file (or none) and apply ``overrides``; validate everything."""
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        data.update(read_yaml(path, "config file", expect="a mapping of config keys"))
    sources = lay_overrides(data, overrides or {})
    return config_from_mapping(data, source, sources)


def lay_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, str]:
    """Lay ``--set`` overrides over the config mapping ``data`` in place
    (``method_options.<name>`` sets one method option); returns where each changed key was
    set (``--set KEY``), for :func:`config_from_mapping`'s ``key_sources``."""
    sources: dict[str, str] = {}
    for key, value in overrides.items():
        if key.startswith(OPTION_PREFIX):  # --set method_options.variant=mu
            name = key[len(OPTION_PREFIX) :]
            data["method_options"] = {**(data.get("method_options") or {}), name: value}
            sources["method_options"] = f"--set {key}"
        else:
            data[key] = value
            sources[key] = f"--set {key}"
    return sources


def labeled_count(cfg: TrainConfig, n_train: int) -> int:
    """Number of labeled cases: ``labeled``, or ``labeled_ratio`` x n_train rounded half up,
    or every training case when neither is set. At least 1, at most ``n_train``."""
    if cfg.labeled is not None:
        n = cfg.labeled
    elif cfg.labeled_ratio is not None:
        n = labeled_from_ratio(cfg.labeled_ratio, n_train)
    else:
        n = n_train
    if not 1 <= n <= n_train:
        raise InputError(
            f"config: labeled count {n} is outside [1, {n_train}] (training list size)"
        )
    return n


def labeled_from_ratio(ratio: float, n_train: int) -> int:
    """Number of labeled cases for a label ratio: ``ratio`` x ``n_train`` rounded half up.

    The product is computed in decimal from the ratio as written (``0.15`` is 15/100, not the
    nearest binary float), so 0.15 x 62 = 9.3 -> 9, 0.25 x 62 = 15.5 -> 16,
    0.145 x 100 = 14.5 -> 15 (binary floats give 14.499999999999998).

    Args:
        ratio: fraction of the training list, 0 < ratio <= 1.
        n_train: training list size.

    Returns:
        The labeled count, in [1, n_train].

    Raises:
        InputError: the ratio is out of range or gives no labeled case.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio):
        raise InputError(f"label ratio must be a number in (0, 1], got {ratio!r}")
    if not 0 < ratio <= 1:
        raise InputError(f"label ratio {ratio} is outside (0, 1]")
    n = int((Decimal(str(ratio)) * n_train).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if not 1 <= n <= n_train:
        raise InputError(
            f"label ratio {ratio} of {n_train} training cases gives {n} labeled cases; need at least 1"
        )
    return n
