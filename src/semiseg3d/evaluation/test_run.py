"""``semiseg3d test --run DIR``: predict the test list of a trained run and score it (the
evaluation job of a run; the inference rule comes from :mod:`semiseg3d.inference.rule`).

Reads ``DIR/model_final.pt`` (weights + config), runs sliding-window inference (spec 6.1)
with the run's ``patch`` and ``stride`` on every case of the test list with the method's
own inference rule (:class:`~semiseg3d.methods.base.Method`; for the dual method by default the
mean softmax of both subnets, ``eval_subnet`` picks one; optional largest connected
component, on by default where the method's own test applies it: DTC, BCP), and writes

- ``DIR/predictions/<ID>.nii.gz``: uint8 masks on the grid the run was trained on (the
  downsampled grid when ``downsample`` > 1), with the case spacing when the h5 file has one;
- ``DIR/metrics.csv``: one row per case and the mean / sd / sem rows
  (:func:`semiseg3d.evaluation.metrics.metrics_table`);
- for a baseline, also the other post-processing variant (baselines spec 1.1):
  ``DIR/metrics_lcc.csv`` (largest component kept) or ``DIR/metrics_nolcc.csv`` (none).

``--set KEY=VALUE`` reads the trained weights another way where the method declares ``KEY``
inference-only (:mod:`semiseg3d.inference.overrides`: URPC's ``method_options.infer``,
MC-Net(+)'s ``mcnet_infer``); the outputs then carry the setting in their names
(``metrics_infer-mean.csv``, ``predictions_infer-mean/``, ``metrics_lcc_infer-mean.csv``)
and the run's own ``metrics.csv`` is left as it is.

The predictions folder and the CSV each appear complete or not at all.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from semiseg3d.cliargs import add_set_option
from semiseg3d.config.registry import spec
from semiseg3d.config.run import parse_overrides
from semiseg3d.data.dataset import VolumeDataset
from semiseg3d.data.postprocess import largest_connected_component
from semiseg3d.data.volumes import read_list
from semiseg3d.errors import InputError
from semiseg3d.evaluation.evaluate import summary_line, write_metrics_csv
from semiseg3d.evaluation.maskio import write_nifti_mask
from semiseg3d.evaluation.metrics import case_metrics, metrics_table
from semiseg3d.inference.overrides import apply_inference_overrides, override_tag
from semiseg3d.inference.rule import load_trained, prepared_rule, runtime_for
from semiseg3d.inference.sliding_window import predict_label, sliding_window_probs
from semiseg3d.io.atomic import atomic_dir, check_output, remove_stale_temps
from semiseg3d.training.checkpoint import CONFIG_NAME

__all__ = [
    "add_arguments",
    "main",
    "test_run",
    "PREDICTIONS_NAME",
    "METRICS_NAME",
]

PREDICTIONS_NAME = "predictions"
METRICS_NAME = "metrics.csv"


def test_run(
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    list_file: str | Path | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    subnet: str | None = None,
    out_name: str = METRICS_NAME,
    predictions_name: str = PREDICTIONS_NAME,
    overrides: Mapping[str, Any] | None = None,
    verbose: bool = True,
) -> pd.DataFrame:
    """Predict and score the test cases of a finished run; write predictions and metrics.

    Args:
        run_dir: the run folder.
        data_dir: dataset folder (default: the run's ``data_dir``).
        list_file: case list (default: the run's ``test_list``, else ``<data>/test.list``).
        batch_size: windows per forward pass.
        device: default CUDA when available (unless the run says ``device: cpu``), else CPU.
        subnet: ``both`` / ``a`` / ``b`` instead of the run's ``eval_subnet``.
        out_name: file name of the metrics table in ``run_dir``.
        predictions_name: folder name of the predictions in ``run_dir``.
        overrides: inference-only config keys to read the weights by
            (:func:`~semiseg3d.inference.overrides.apply_inference_overrides`); their
            :func:`~semiseg3d.inference.overrides.override_tag` is appended to
            ``out_name`` and ``predictions_name`` (``metrics_infer-mean.csv``).
        verbose: print one line per case.

    Returns:
        The metrics table that was written to ``DIR/metrics.csv``.

    Raises:
        InputError: missing run, data, list or case; a case without a label; a file or a
            foreign folder where the predictions folder goes, a folder where a metrics
            table goes (checked before any work); a key of ``overrides`` that is not
            inference-only for the run's method, or a value it does not allow.
    """
    run = Path(run_dir)
    cfg, nets = load_trained(run)
    if overrides:
        cfg = apply_inference_overrides(cfg, overrides)
        tag = override_tag(overrides)
        out_name = f"{Path(out_name).stem}_{tag}{Path(out_name).suffix}"
        predictions_name = f"{predictions_name}_{tag}"
    # an old predictions folder of this run is ours; a file or a foreign folder is not
    pred_ours = (f"../{CONFIG_NAME}",)
    check_output(run / predictions_name, folder=True, ours=pred_ours)
    check_output(run / out_name, folder=False)
    data = Path(data_dir) if data_dir is not None else Path(cfg.data_dir)
    if not str(data) or not data.is_dir():
        raise InputError(f"{data}: dataset folder not found (use --data)")
    if list_file is not None:
        lst = Path(list_file)
    elif cfg.test_list:
        lst = Path(cfg.test_list)
    else:
        lst = data / "test.list"
    ids = read_list(lst)
    if not ids:
        raise InputError(f"{lst}: case list is empty")
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    accel = runtime_for(cfg, nets, batch_size, device, where="device")
    dev = accel.device
    members, prob_fn, lcc = prepared_rule(cfg, nets, accel, subnet)
    alt_rows: list[dict] | None = [] if spec(cfg.method).baseline else None
    dataset = VolumeDataset(data, ids, cfg.patch, downsample=cfg.downsample, with_label=True)
    rows = []
    remove_stale_temps(run / predictions_name)  # what a killed earlier run left
    with atomic_dir(run / predictions_name, ours=pred_ours) as pred_dir:
        for index, case_id in enumerate(ids):
            t0 = time.monotonic()
            vol = dataset.volume(index)
            probs = sliding_window_probs(
                prob_fn,
                vol.image,
                cfg.patch,
                cfg.stride,
                batch_size=batch_size,
                device=dev,
                amp_dtype=accel.dtype,
                channels_last=accel.channels_last,
            )
            raw = predict_label(probs)
            pred = largest_connected_component(raw) if lcc else raw
            write_nifti_mask(pred, pred_dir / f"{case_id}.nii.gz", spacing=vol.spacing)
            assert vol.label is not None
            row = {"case": case_id, **case_metrics(pred, vol.label, vol.spacing)}
            rows.append(row)
            if alt_rows is not None:  # the other post-processing variant, logged beside
                alt = raw if lcc else largest_connected_component(raw)
                alt_rows.append({"case": case_id, **case_metrics(alt, vol.label, vol.spacing)})
            if verbose:
                print(
                    f"{case_id}: dice {row['dice']:.4f} hd95 {row['hd95']:.2f} "
                    f"({time.monotonic() - t0:.1f} s)",
                    flush=True,
                )
    table = metrics_table(rows)
    write_metrics_csv(table, run / out_name)
    if alt_rows is not None:
        alt_name = ("metrics_nolcc" if lcc else "metrics_lcc") + out_name.removeprefix("metrics")
        write_metrics_csv(metrics_table(alt_rows), run / alt_name)
    if verbose:
        print(f"{summary_line(table)} -> {run / out_name}")
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d test``."""
    parser.add_argument("--run", metavar="DIR", required=True, help="trained run folder")
    parser.add_argument("--data", metavar="DIR", help="dataset folder (default: the run's)")
    parser.add_argument("--list", metavar="FILE", help="case list (default: the run's test list)")
    parser.add_argument(
        "--batch-size", type=int, default=4, metavar="N", help="windows per forward pass"
    )
    parser.add_argument(
        "--subnet",
        choices=("both", "a", "b"),
        help="evaluate both subnets' mean softmax, Subnet A or Subnet B (default: the run's "
        "eval_subnet); with a or b the outputs are metrics_<a|b>.csv and predictions_<a|b>/",
    )
    add_set_option(
        parser,
        "read the weights another way through a key the method declares inference-only "
        "(URPC: method_options.infer=mean; MC-Net(+): mcnet_infer=mean); the outputs are "
        "then metrics_<setting>.csv and predictions_<setting>/, e.g. metrics_infer-mean.csv",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``semiseg3d test``; returns 0."""
    names = {}
    if args.subnet in ("a", "b"):
        names = {
            "out_name": f"metrics_{args.subnet}.csv",
            "predictions_name": f"{PREDICTIONS_NAME}_{args.subnet}",
        }
    test_run(
        args.run,
        data_dir=args.data,
        list_file=args.list,
        batch_size=args.batch_size,
        subnet=args.subnet,
        overrides=parse_overrides(args.overrides),
        **names,
    )
    return 0
