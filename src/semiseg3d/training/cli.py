"""``semiseg3d train --config FILE --out DIR [--set KEY=VALUE ...]``.

Trains the run described by the config (plus overrides) into the run folder ``DIR``,
resuming from ``DIR/checkpoint.pt`` when it exists and doing nothing when
``DIR/model_final.pt`` exists. See :mod:`semiseg3d.training.trainer`.
"""

from __future__ import annotations

import argparse

from semiseg3d.cliargs import add_set_option
from semiseg3d.config.run import load_config, parse_overrides

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d train``."""
    parser.add_argument("--config", metavar="FILE", help="run config (YAML); omitted = defaults")
    parser.add_argument("--out", metavar="DIR", required=True, help="run folder")
    add_set_option(parser, "override a config key (value read as YAML); repeatable")
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="tqdm progress bar on stderr (auto = when stderr is a terminal)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``semiseg3d train``; returns 0 when the run is finished."""
    from semiseg3d.training.trainer import train

    cfg = load_config(args.config, parse_overrides(args.overrides))
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    result = train(cfg, args.out, progress=progress)
    if not result.skipped:
        state = "finished" if result.finished else "stopped"
        print(
            f"semiseg3d train: {state} at iteration {result.iteration}/{cfg.iterations} "
            f"in {result.seconds:.1f} s -> {result.out_dir}"
        )
    return 0
