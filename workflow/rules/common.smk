# Config validation, the experiment grid and input functions, shared by every rule file.
#
# The grid logic lives in semiseg3d.grid.run_config and the folder layout in
# semiseg3d.grid.layout, which `semiseg3d run-config` and the report use too, so the DAG,
# the per-run configs and the report agree by construction.

import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

from semiseg3d.errors import InputError
from semiseg3d.grid import run_config as rc
from semiseg3d.grid.layout import (
    BENCHMARKS,
    LOGS,
    PROCESSED,
    RUN,
    RUN_CONFIG,
    RUN_SUMMARY,
    RUNS_ROOT,
    SPLIT,
)

min_version("9.0")

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "params.schema.yaml"


def _rel(path):
    """``path`` relative to the working directory when it lies inside it."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


PARAMS_FILE = "params.yaml"
OVERLAYS = [
    _rel(p)
    for p in workflow.overwrite_configfiles
    if os.path.abspath(p) != os.path.abspath(PARAMS_FILE)
]
SOURCE = ", ".join([PARAMS_FILE, *OVERLAYS])

# -- validation: a bad key or value stops here, with one line naming it ------------------------


def _stop(message):
    """Stop before the DAG is built: one line on stderr, exit code 1.

    A WorkflowError would add Snakemake's "WorkflowError in file ..." and traceback lines.
    """
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# `--config KEY=VALUE` is refused first, naming --config (not the files): the per-run configs
# are written by `semiseg3d run-config` from the files, which would not see it.
_CLI_CONFIG = dict(workflow.config_settings.config or {})
try:
    _FROM_FILES = rc.load_params(PARAMS_FILE, OVERLAYS)
except InputError as exc:
    _stop(exc)
_CHANGED = sorted(
    k for k in _CLI_CONFIG if _FROM_FILES.get(k, object()) != config.get(k)
)
if _CHANGED:
    _stop(
        f"--config {', '.join(_CHANGED)}: settings cannot be changed with --config; put them "
        "in params.yaml or in an overlay passed with --configfile, so `semiseg3d run-config` "
        "sees them"
    )
try:
    rc.validate_params(config, SCHEMA, SOURCE)
except InputError as exc:
    _stop(exc)
validate(config, SCHEMA)
if config != _FROM_FILES:
    _stop(
        f"the Snakemake config differs from {SOURCE}: put changes in params.yaml or in an "
        "overlay passed with --configfile (not --config), so `semiseg3d run-config` sees them"
    )

# -- the grid ---------------------------------------------------------------------------------
RUNS = rc.expand_grid(config)
DATASETS = sorted({run.dataset for run in RUNS})
SPLITS = sorted({(run.dataset, run.ratio) for run in RUNS})


def _names_with_source(kind):
    """Regex alternation of the datasets whose data come from ``kind`` (matches nothing if none)."""
    names = [n for n, entry in config["data"].items() if entry["source"] == kind]
    return "|".join(names) if names else "(?!)"


wildcard_constraints:
    dataset="[A-Za-z0-9][A-Za-z0-9_-]*",
    variant="[A-Za-z][A-Za-z0-9_.-]*",
    ratio="[0-9]+",
    seed="[0-9]+",


# -- paths (semiseg3d.grid.layout) ------------------------------------------------------------
def run_paths(pattern):
    """``pattern`` filled in for every training run of the grid."""
    return [r.fill(pattern) for r in RUNS]


def split_paths(name):
    """``data/splits/{dataset}/r{ratio}/<name>`` for every split the grid needs."""
    return [f"{SPLIT.format(dataset=d, ratio=r)}/{name}" for d, r in SPLITS]


# -- input functions and params ---------------------------------------------------------------
def data_entry(wildcards):
    """The ``data.<dataset>`` entry of params.yaml."""
    return config["data"][wildcards.dataset]


def split_how(wildcards):
    """``--labeled N`` when params.yaml lists the count for this ratio, else ``--ratio R``."""
    n = rc.labeled_for_ratio(config, wildcards.dataset, int(wildcards.ratio))
    if n is not None:
        return f"--labeled {n}"
    return f"--ratio {int(wildcards.ratio) / 100:g}"


def run_settings(wildcards):
    """The resolved training settings of a run: a params entry, so a change reruns it."""
    return rc.variant_settings(config, wildcards.dataset, wildcards.variant)


# ``--overlay FILE`` for each ``--configfile`` overlay given to Snakemake; braces doubled, as
# Snakemake fills wildcards into params strings
OVERLAY_ARGS = " ".join(f"--overlay {shlex.quote(p)}" for p in OVERLAYS)
OVERLAY_ARGS = OVERLAY_ARGS.replace("{", "{{").replace("}", "}}")


def fetch_args(wildcards):
    """``--dataset la [--source-dir DIR]``: the LA release (the one `fetch` knows), copied
    from data.<dataset>.local when that is set, else downloaded; any dataset name may use it.
    """
    local = data_entry(wildcards).get("local")
    return "--dataset la" + (
        f" --source-dir {shlex.quote(str(local))}" if local else ""
    )


def convert_args(wildcards):
    """``--dataset FORMAT --raw DIR [--labels DIR] [--seed S] [--set KEY=VALUE ...]``.

    ``raw: null`` means data/raw/<dataset>: when that is missing too, the converter's error
    says where the data is officially obtained and how its folder is laid out.
    """
    entry = data_entry(wildcards)
    raw = entry.get("raw") or f"data/raw/{wildcards.dataset}"
    args = [f"--dataset {entry['format']}", f"--raw {shlex.quote(str(raw))}"]
    if entry.get("labels"):
        args.append(f"--labels {shlex.quote(str(entry['labels']))}")
    if "seed" in entry:
        args.append(f"--seed {entry['seed']}")
    for key, value in (entry.get("options") or {}).items():
        setting = f"{key}={json.dumps(value, separators=(',', ':'))}"
        args.append(f"--set {shlex.quote(setting)}")
    return " ".join(args)


def synth_args(wildcards):
    """``--cases N --test M --shape X Y Z --spacing SX SY SZ --seed S`` from data.<dataset>."""
    entry = data_entry(wildcards)
    synth = entry["synth"]
    args = []
    if "cases" in synth:
        args.append(f"--cases {synth['cases']}")
    if "test" in synth:
        args.append(f"--test {synth['test']}")
    if "shape" in synth:
        args.append(f"--shape {' '.join(str(v) for v in synth['shape'])}")
    if "spacing" in synth:
        args.append(f"--spacing {' '.join(str(v) for v in synth['spacing'])}")
    args.append(f"--seed {entry.get('seed', 0)}")
    return " ".join(args)
