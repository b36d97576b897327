"""Where each phase of the pipeline writes, relative to the working directory (the
repository root): the one definition that ``workflow/rules/common.smk`` (the DAG),
``semiseg3d run-config`` (:mod:`semiseg3d.grid.run_config`) and the report
(:mod:`semiseg3d.reporting.collect`) use.

Patterns use Python format fields (``{dataset}``, ``{variant}``, ``{ratio}``, ``{seed}``),
which are also Snakemake's wildcards.
"""

from __future__ import annotations

import re

__all__ = [
    "PROCESSED_ROOT",
    "SPLITS_ROOT",
    "RUNS_ROOT",
    "PROCESSED",
    "SPLIT",
    "RUN_PATH",
    "RUN",
    "RUN_CONFIG",
    "RUN_SUMMARY",
    "LOGS",
    "BENCHMARKS",
    "ratio_dir",
    "seed_dir",
    "parse_ratio_dir",
    "parse_seed_dir",
]

PROCESSED_ROOT = "data/processed"
SPLITS_ROOT = "data/splits"
RUNS_ROOT = "results/runs"
#: the preprocessed dataset folder
PROCESSED = PROCESSED_ROOT + "/{dataset}"
#: labeled / unlabeled / train / test lists of one label ratio
SPLIT = SPLITS_ROOT + "/{dataset}/r{ratio}"
#: a run's place below a results root (``results/runs``, ``results/configs``, ...)
RUN_PATH = "{dataset}/{variant}/r{ratio}/s{seed}"
#: the run folder (config.yaml, train.log, model_final.pt, metrics.csv, predictions/)
RUN = RUNS_ROOT + "/" + RUN_PATH
#: the run's config as written by ``semiseg3d run-config``
RUN_CONFIG = "results/configs/" + RUN_PATH + ".yaml"
#: the evaluate phase's summary rows of a run
RUN_SUMMARY = "results/metrics/" + RUN_PATH + ".yaml"
LOGS = "results/logs"
BENCHMARKS = "results/benchmarks"

_RATIO = re.compile(r"^r(\d+)$")
_SEED = re.compile(r"^s(\d+)$")


def ratio_dir(ratio: int) -> str:
    """``r{ratio}``: the folder of a labeled percentage."""
    return f"r{int(ratio)}"


def seed_dir(seed: int) -> str:
    """``s{seed}``: the folder of a training seed."""
    return f"s{int(seed)}"


def parse_ratio_dir(name: str) -> int | None:
    """The ratio of a ``r{ratio}`` folder name, or None."""
    m = _RATIO.match(name)
    return int(m.group(1)) if m else None


def parse_seed_dir(name: str) -> int | None:
    """The seed of a ``s{seed}`` folder name, or None."""
    m = _SEED.match(name)
    return int(m.group(1)) if m else None
