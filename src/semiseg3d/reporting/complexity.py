"""``semiseg3d complexity``: parameter and MAC counts of a network, or of every network a
method trains (teachers included), at one input size (spec section 1.5).

The counting rules are :mod:`semiseg3d.models.complexity`; a method's networks come from
its own builder (:func:`semiseg3d.methods.networks`), the one training uses.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch

from semiseg3d.cliargs import add_xyz_option
from semiseg3d.config.registry import method_names
from semiseg3d.methods import networks
from semiseg3d.models.complexity import check_patch, count_params, legacy_macs, true_macs
from semiseg3d.models.dual import MODEL_NAMES, build_model

__all__ = ["model_names", "complexity_report", "add_arguments", "main"]


def model_names() -> tuple[str, ...]:
    """What ``--model`` accepts: the networks, then every registered method."""
    return MODEL_NAMES + tuple(m for m in method_names() if m not in MODEL_NAMES)


def complexity_report(name: str, patch: Sequence[int]) -> dict[str, object]:
    """Parameter and MAC counts of network ``name`` at input size ``patch`` (batch 1).

    Returns:
        ``model``, ``patch`` (list of 3 ints), ``params`` (int), ``params_m`` (millions),
        ``macs`` / ``macs_legacy`` (ints) and ``macs_g`` / ``macs_g_legacy`` (in 1e9).

    Args:
        name: a network (``vnet``, ``resnet34``, ``dual``) or a registered method (every
            network it trains or keeps, EMA teachers included: what its own ``build``
            and ``build_teachers`` return).
        patch: spatial input size (X, Y, Z), voxels, each a multiple of 16.

    Raises:
        InputError: for an unknown model name or a patch that is not three multiples of 16.
    """
    dims = check_patch(patch)
    with torch.device("meta"):
        model = build_model(name) if name in MODEL_NAMES else networks(name)
    macs = true_macs(model, dims)
    macs_legacy = legacy_macs(model, dims)
    params = count_params(model)
    return {
        "model": name,
        "patch": list(dims),
        "params": params,
        "params_m": round(params / 1e6, 6),
        "macs": macs,
        "macs_g": round(macs / 1e9, 6),
        "macs_legacy": macs_legacy,
        "macs_g_legacy": round(macs_legacy / 1e9, 6),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d complexity``."""
    parser.add_argument(
        "--model",
        choices=model_names(),
        default="dual",
        help="a network or a method's networks (default: dual)",
    )
    add_xyz_option(
        parser,
        "--patch",
        "input size in voxels, each a multiple of 16 (default: 112 112 80, the LA patch)",
        metavar=("D", "H", "W"),
        default=(112, 112, 80),
    )


def main(args: argparse.Namespace) -> int:
    """Print one JSON object with the counts of ``args.model`` at ``args.patch``."""
    print(json.dumps(complexity_report(args.model, args.patch)))
    return 0
