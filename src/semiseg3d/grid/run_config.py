"""From ``params.yaml`` to the training config of one grid point.

``params.yaml`` (the pipeline's one parameter file, see the README) holds per-dataset
settings and an experiment grid. This module reads it (with optional overlays, merged the
way Snakemake merges ``--configfile`` overlays), checks it against
``workflow/schemas/params.schema.yaml`` plus the cross-references a schema cannot express,
expands the grid, and resolves one grid point into a validated
:class:`~semiseg3d.config.run.TrainConfig`.

Resolution order for one run (later wins)::

    TrainConfig defaults < train.defaults < train.<dataset> < variants.<variant>
        < run keys (dataset, data_dir, train_list, test_list, labeled, seed, extra)

Grid points whose resolved settings coincide for one dataset (``alpha70`` on LA is the
``full`` run) are trained once, under the first name in :func:`canonical_order`
(``full`` first).

The Snakemake workflow (``workflow/rules/common.smk``) imports these functions, so the DAG
and the command below agree by construction. Command line::

    semiseg3d run-config --params params.yaml [--overlay config/demo.yaml ...] \\
        --dataset la --ratio 10 --variant full --seed 1337 --out cfg.yaml
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from semiseg3d.config.registry import method_names, preset_of
from semiseg3d.config.run import TrainConfig, config_from_mapping
from semiseg3d.errors import InputError
from semiseg3d.grid.layout import PROCESSED, RUN, RUN_PATH, SPLIT
from semiseg3d.io.atomic import write_text_atomic
from semiseg3d.io.yamlio import read_yaml
from semiseg3d.paths import repo_root

__all__ = [
    "RUN_KEYS",
    "RunKey",
    "default_schema_path",
    "deep_merge",
    "load_params",
    "validate_params",
    "check_params",
    "dataset_settings",
    "variant_settings",
    "canonical_order",
    "canonical_variant",
    "experiment_points",
    "expand_grid",
    "labeled_for_ratio",
    "processed_dir",
    "split_dir",
    "run_dir",
    "run_mapping",
    "build_run_config",
    "add_arguments",
    "main",
]

#: TrainConfig keys set per run by this module; params.yaml may not set them
RUN_KEYS = frozenset(
    {"dataset", "data_dir", "train_list", "test_list", "labeled", "labeled_ratio", "seed", "extra"}
)


@dataclass(frozen=True, order=True)
class RunKey:
    """One training run of the grid.

    Attributes:
        dataset: dataset name.
        variant: canonical variant name (see :func:`canonical_variant`).
        ratio: labeled percentage as an integer (100 = every training case labeled).
        seed: training seed.
    """

    dataset: str
    variant: str
    ratio: int
    seed: int

    @property
    def path(self) -> str:
        """``{dataset}/{variant}/r{ratio}/s{seed}``: the run's place under ``results/runs``
        (:data:`~semiseg3d.grid.layout.RUN_PATH`)."""
        return self.fill(RUN_PATH)

    def fill(self, pattern: str) -> str:
        """``pattern`` (a :mod:`~semiseg3d.grid.layout` path) filled in for this run."""
        return pattern.format(
            dataset=self.dataset, variant=self.variant, ratio=self.ratio, seed=self.seed
        )


# -- reading and checking --------------------------------------------------------------------


def default_schema_path() -> Path:
    """``workflow/schemas/params.schema.yaml`` of the checkout."""
    return repo_root() / "workflow" / "schemas" / "params.schema.yaml"


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``over`` into a copy of ``base``: mappings recursively, anything else replaced.

    This is how Snakemake merges ``--configfile`` overlays into ``configfile:``; lists are
    replaced, not concatenated.
    """
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_params(params: str | Path, overlays: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Read ``params`` and merge each overlay over it in order (no validation)."""
    merged = read_yaml(params)
    for overlay in overlays:
        merged = deep_merge(merged, read_yaml(overlay))
    return merged


def _dotted(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _schema_message(error: Any) -> str:
    """One line naming the offending key for a jsonschema ValidationError."""
    where = _dotted(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        if extra:
            keys = ", ".join(f"{where}.{k}" if error.absolute_path else k for k in extra)
            return f"unknown key {keys}"
    if error.validator == "propertyNames":
        return f"{where}: invalid key {error.instance!r} ({error.message})"
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def validate_params(
    params: Mapping[str, Any], schema: str | Path | None = None, source: str = "params.yaml"
) -> None:
    """Check ``params`` against the JSON schema, then the cross-references (:func:`check_params`).

    Args:
        params: the merged parameter mapping.
        schema: schema file (default :func:`default_schema_path`).
        source: name used in error messages.

    Raises:
        InputError: one line naming the first offending key (dotted, e.g.
            ``train.la.alpha``) and what is wrong.
    """
    import jsonschema

    schema_path = Path(schema) if schema is not None else default_schema_path()
    schema_doc = read_yaml(schema_path)
    validator = jsonschema.Draft202012Validator(schema_doc)
    best = jsonschema.exceptions.best_match(validator.iter_errors(params))
    if best is not None:
        raise InputError(f"{source}: {_schema_message(best)}")
    check_params(params, source)


def check_params(params: Mapping[str, Any], source: str = "params.yaml") -> None:
    """Cross-reference checks the schema cannot express.

    Every dataset of an enabled experiment has a ``data`` entry; every variant named in the
    grid is defined; every dataset's resolved settings are a valid TrainConfig (so a bad
    value stops the DAG before any job runs).

    Raises:
        InputError: naming the key.
    """
    data = params.get("data", {})
    variants = params.get("variants", {})
    train = params.get("train", {})
    grid = params.get("grid", {})
    for name in train:
        if name != "defaults" and name not in data:
            raise InputError(f"{source}: train.{name}: no dataset '{name}' under data")
    for i, exp in enumerate(grid.get("experiments", [])):
        if not exp.get("enabled", True):
            continue
        where = f"grid.experiments[{i}] ({exp.get('name', '?')})"
        for ds in exp.get("datasets", grid.get("datasets", [])):
            if ds not in data:
                raise InputError(f"{source}: {where}: dataset '{ds}' is not defined under data")
        for v in exp.get("variants", []):
            if v not in variants:
                raise InputError(f"{source}: {where}: variant '{v}' is not defined under variants")
    points = _raw_points(params)
    for ds in sorted({k.dataset for k in points}):
        _check_data_entry(data[ds], ds, source)
        _check_settings(dataset_settings(params, ds), ds, f"{source}: train.{ds}")
        for v in sorted({k.variant for k in points if k.dataset == ds}):
            _check_settings(
                variant_settings(params, ds, v), ds, f"{source}: train.{ds} with variants.{v}"
            )


def _check_data_entry(entry: Mapping[str, Any], dataset: str, source: str) -> None:
    """Check converter options and synthetic-data sizes with their own modules' rules."""
    where = f"{source}: data.{dataset}"
    try:
        if entry.get("source") == "convert":
            from semiseg3d.data.convert import default_options
            from semiseg3d.data.preprocess import load_options

            options = dict(entry.get("options") or {})
            if "seed" in entry:
                options["seed"] = entry["seed"]
            load_options(None, options, default_options(entry["format"]))
        elif entry.get("source") == "synth":
            from semiseg3d.data.synthetic import SynthParams

            synth = entry.get("synth") or {}
            SynthParams(
                n_train=synth.get("cases", 16),
                n_test=synth.get("test", 4),
                shape=tuple(synth.get("shape", (48, 48, 32))),
                seed=entry.get("seed", 0),
                spacing=tuple(synth.get("spacing", (1.0, 1.0, 1.0))),
            )
    except InputError as exc:
        raise InputError(f"{where}: {str(exc).removeprefix('--set: ')}") from exc


def _check_settings(settings: Mapping[str, Any], dataset: str, where: str) -> None:
    try:
        config_from_mapping({**settings, "dataset": dataset}, where)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(where) else f"{where}: {message}") from exc


# -- settings --------------------------------------------------------------------------------


def dataset_settings(params: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """``train.defaults`` merged with ``train.<dataset>`` (TrainConfig keys)."""
    train = params.get("train", {}) or {}
    if dataset not in (params.get("data", {}) or {}):
        raise InputError(f"params: unknown dataset '{dataset}' (not defined under data)")
    return {**(train.get("defaults") or {}), **(train.get(dataset) or {})}


def variant_settings(params: Mapping[str, Any], dataset: str, variant: str) -> dict[str, Any]:
    """The dataset's settings with the variant's switches laid over them; for a preset
    method (LUSEG) the preset's keys replace the dataset's (a variant that sets one of them
    otherwise is refused when the config is built)."""
    variants = params.get("variants", {}) or {}
    if variant not in variants:
        raise InputError(f"params: unknown variant '{variant}' (not defined under variants)")
    base = dataset_settings(params, dataset)
    own = variants[variant] or {}
    method = own.get("method", base.get("method"))
    preset: dict[str, Any] = {}
    if method in method_names():
        options = own.get("method_options", base.get("method_options")) or {}
        preset = preset_of(method, options) if isinstance(options, Mapping) else {}
    return {**base, **preset, **own}


def canonical_order(params: Mapping[str, Any]) -> list[str]:
    """Variant names in the order that picks a canonical name: ``full`` first, then as defined."""
    names = list((params.get("variants") or {}).keys())
    return (["full"] if "full" in names else []) + [n for n in names if n != "full"]


def _effective(params: Mapping[str, Any], dataset: str, variant: str) -> dict[str, Any]:
    cfg = config_from_mapping(
        {**variant_settings(params, dataset, variant), "dataset": dataset}, f"variant {variant}"
    )
    return cfg.to_dict()


def canonical_variant(
    params: Mapping[str, Any],
    dataset: str,
    variant: str,
    _memo: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> str:
    """The name a variant is trained under on ``dataset``.

    A variant whose resolved TrainConfig equals that of an earlier variant in
    :func:`canonical_order` (e.g. ``alpha70`` on LA equals ``full``) maps to that variant.
    ``_memo`` (one dict per ``params``) keeps resolved configs across calls.
    """
    memo = {} if _memo is None else _memo

    def effective(name: str) -> dict[str, Any]:
        if (dataset, name) not in memo:
            memo[(dataset, name)] = _effective(params, dataset, name)
        return memo[(dataset, name)]

    target = effective(variant)
    for name in canonical_order(params):
        if name == variant:
            return variant
        if effective(name) == target:
            return name
    return variant


def _raw_points(params: Mapping[str, Any]) -> list[RunKey]:
    grid = params.get("grid", {}) or {}
    seeds = grid.get("seeds", [])
    points: list[RunKey] = []
    for exp in grid.get("experiments", []) or []:
        if not exp.get("enabled", True):
            continue
        for ds in exp.get("datasets", grid.get("datasets", [])):
            for ratio in exp["ratios"]:
                for v in exp["variants"]:
                    points.extend(RunKey(ds, v, int(ratio), int(s)) for s in seeds)
    return points


def experiment_points(params: Mapping[str, Any]) -> list[RunKey]:
    """Every grid point as named (before merging coincident ones), duplicates removed."""
    return list(dict.fromkeys(_raw_points(params)))


def expand_grid(params: Mapping[str, Any]) -> list[RunKey]:
    """The training runs of the grid: each grid point under its canonical variant, once.

    Returns:
        Sorted, duplicate-free run keys.
    """
    cache: dict[tuple[str, str], str] = {}
    memo: dict[tuple[str, str], dict[str, Any]] = {}  # each variant resolved once per dataset
    runs = set()
    for key in _raw_points(params):
        pair = (key.dataset, key.variant)
        if pair not in cache:
            cache[pair] = canonical_variant(params, *pair, _memo=memo)
        runs.add(dataclasses.replace(key, variant=cache[pair]))
    return sorted(runs)


def labeled_for_ratio(params: Mapping[str, Any], dataset: str, ratio: int) -> int | None:
    """The labeled count of ``data.<dataset>.labeled.r<ratio>``, or None (use the ratio)."""
    entry = (params.get("data", {}) or {}).get(dataset)
    if entry is None:
        raise InputError(f"params: unknown dataset '{dataset}' (not defined under data)")
    return (entry.get("labeled") or {}).get(f"r{int(ratio)}")


# -- paths -----------------------------------------------------------------------------------


def processed_dir(dataset: str) -> str:
    """``data/processed/{dataset}``: the preprocessed dataset folder."""
    return PROCESSED.format(dataset=dataset)


def split_dir(dataset: str, ratio: int) -> str:
    """``data/splits/{dataset}/r{ratio}``: labeled / unlabeled / train / test lists."""
    return SPLIT.format(dataset=dataset, ratio=int(ratio))


def run_dir(key: RunKey) -> str:
    """``results/runs/{dataset}/{variant}/r{ratio}/s{seed}``: the run folder."""
    return key.fill(RUN)


# -- one run ---------------------------------------------------------------------------------


def _read_ids(path: Path) -> list[str]:
    from semiseg3d.data.volumes import read_list

    return read_list(path)


def run_mapping(
    params: Mapping[str, Any],
    key: RunKey,
    *,
    data_dir: str | Path | None = None,
    split: str | Path | None = None,
) -> dict[str, Any]:
    """The TrainConfig mapping of one run.

    The split folder must hold ``labeled.list``, ``unlabeled.list``, ``train.list`` (labeled
    then unlabeled, as the pipeline's split rule writes it) and ``test.list``; the labeled
    count is the length of ``labeled.list``.

    Args:
        params: merged, validated parameters.
        key: the run (its variant need not be canonical).
        data_dir: preprocessed dataset folder (default ``data/processed/{dataset}``).
        split: split folder (default ``data/splits/{dataset}/r{ratio}``).

    Returns:
        A mapping :func:`~semiseg3d.config.run.config_from_mapping` accepts.

    Raises:
        InputError: unknown dataset or variant, a missing or inconsistent list.
    """
    settings = variant_settings(params, key.dataset, key.variant)
    split_path = Path(split) if split is not None else Path(split_dir(key.dataset, key.ratio))
    labeled = _read_ids(split_path / "labeled.list")
    unlabeled = _read_ids(split_path / "unlabeled.list")
    train = _read_ids(split_path / "train.list")
    if train != labeled + unlabeled:
        raise InputError(
            f"{split_path / 'train.list'}: expected labeled.list followed by unlabeled.list"
        )
    if not labeled:
        raise InputError(f"{split_path / 'labeled.list'}: no labeled case")
    expected = labeled_for_ratio(params, key.dataset, key.ratio)
    if expected is not None and expected != len(labeled):
        raise InputError(
            f"{split_path / 'labeled.list'}: {len(labeled)} cases, but "
            f"data.{key.dataset}.labeled.r{key.ratio} is {expected}"
        )
    mapping = dict(settings)
    mapping.update(
        dataset=key.dataset,
        data_dir=str(data_dir if data_dir is not None else processed_dir(key.dataset)),
        train_list=str(split_path / "train.list"),
        test_list=str(split_path / "test.list"),
        labeled=len(labeled),
        seed=int(key.seed),
        extra={"variant": key.variant, "ratio": int(key.ratio), "seed": int(key.seed)},
    )
    return mapping


def build_run_config(
    params: Mapping[str, Any],
    key: RunKey,
    *,
    data_dir: str | Path | None = None,
    split: str | Path | None = None,
) -> TrainConfig:
    """:func:`run_mapping` as a validated TrainConfig."""
    source = f"params: dataset {key.dataset}, variant {key.variant}"
    return config_from_mapping(run_mapping(params, key, data_dir=data_dir, split=split), source)


# -- semiseg3d run-config --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d run-config``."""
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml")
    parser.add_argument(
        "--overlay",
        type=Path,
        action="append",
        default=[],
        metavar="YAML",
        help="overlay merged over --params (repeatable; like snakemake --configfile)",
    )
    parser.add_argument("--schema", type=Path, help="JSON schema (default workflow/schemas/...)")
    parser.add_argument("--dataset", required=True, help="dataset name (a key of data)")
    parser.add_argument("--ratio", required=True, type=int, help="labeled percentage (100 = all)")
    parser.add_argument("--variant", required=True, help="variant name (a key of variants)")
    parser.add_argument("--seed", required=True, type=int, help="training seed")
    parser.add_argument("--data-dir", type=Path, help="dataset folder (default data/processed/D)")
    parser.add_argument("--split", type=Path, help="split folder (default data/splits/D/rR)")
    parser.add_argument("--out", required=True, type=Path, help="config file to write (YAML)")


def main(args: argparse.Namespace) -> int:
    """Write the resolved, validated TrainConfig of one grid point as YAML."""
    params = load_params(args.params, args.overlay)
    source = ", ".join(str(p) for p in [args.params, *args.overlay])
    validate_params(params, args.schema, source)
    if args.dataset not in params["data"]:
        raise InputError(f"--dataset: unknown dataset '{args.dataset}' (not defined under data)")
    if args.variant not in params["variants"]:
        raise InputError(
            f"--variant: unknown variant '{args.variant}' (not defined under variants)"
        )
    if not 1 <= args.ratio <= 100:
        raise InputError(f"--ratio: {args.ratio} is outside [1, 100]")
    key = RunKey(args.dataset, args.variant, args.ratio, args.seed)
    cfg = build_run_config(params, key, data_dir=args.data_dir, split=args.split)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    write_text_atomic(args.out, text)
    print(f"wrote {args.out} ({key.path}, labeled {cfg.labeled})")
    return 0
