"""``semiseg3d predict``: segment a new scan with a trained run, on the scan's own grid.

::

    semiseg3d predict --run RUNDIR --input SCAN --out mask.nii.gz
        [--probs probs.nii.gz] [--entropy entropy.nii.gz] [--device cpu|cuda]
        [--preprocess FILE] [--batch-size N]

``SCAN`` is a NIfTI or NRRD file (MetaImage too) or a folder holding one DICOM series.

1. The run's weights and config come from ``RUNDIR/model_final.pt``.
2. The preprocessing recipe (:class:`~semiseg3d.data.preprocess.PreprocessOptions`) is
   looked up in this order: ``--preprocess FILE``; ``RUNDIR/preprocess.json``;
   ``<config data_dir>/preprocess.json`` (written by ``semiseg3d convert`` / ``fetch``); the
   built-in recipe of the config's ``dataset`` (``la``, ``pancreas``, ``brats``, ``synthetic``).
3. The scan gets the same resampling and intensity map as the training data
   (:func:`~semiseg3d.data.preprocess.prepare_inference`): a ``foreground`` crop is
   applied, a ``label`` crop is not (there is no label), every axis is padded to the patch.
   With ``downsample`` > 1 in the config the volume is block-averaged as in training.
4. Sliding-window inference with the run's patch and stride and the method's own inference
   rule (dual: mean softmax of both subnets, or the subnet the config's ``eval_subnet``
   names; baselines: :meth:`semiseg3d.methods.base.Method.inference_nets`).
5. The foreground probability is put back on the full (resampled) grid (zero outside the
   crop), resampled linearly onto the input grid when the recipe resamples, and
   thresholded at 0.5 (the argmax of two classes); where the run's ``postprocess_lcc`` or the
   method's own test says so (DTC, BCP), only the mask's largest 26-connected component is
   kept. The mask (uint8 {0, 1}), and optionally
   the probability and the entropy ``-sum_c p_c ln(p_c + 1e-10)`` (nats, float32), are
   written with the input's size, spacing, origin and direction.

Each output file appears complete or not at all.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from semiseg3d.cliargs import add_path_options, add_set_option
from semiseg3d.config.run import parse_overrides
from semiseg3d.data.geometry import from_xyz, read_image, resample_like, write_image
from semiseg3d.data.postprocess import largest_connected_component
from semiseg3d.data.preprocess import (
    PreprocessOptions,
    options_from_mapping,
    prepare_inference,
)
from semiseg3d.errors import InputError
from semiseg3d.inference.overrides import apply_inference_overrides
from semiseg3d.inference.rule import load_trained, prepared_rule, runtime_for
from semiseg3d.inference.sliding_window import ProbFn, sliding_window_probs
from semiseg3d.io.atomic import atomic_path, remove_stale_temps
from semiseg3d.io.yamlio import read_yaml

__all__ = [
    "OUTPUT_SUFFIXES",
    "Prediction",
    "recipe_for_run",
    "read_recipe",
    "predict_image",
    "predict_scan",
    "add_arguments",
    "main",
]

#: accepted output file endings
OUTPUT_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")
_PREPROCESS_FILE = "preprocess.json"
_EPS = 1e-10


@dataclass(frozen=True)
class Prediction:
    """A prediction on the input grid: SimpleITK images with the input's geometry.

    Attributes:
        mask: uint8 {0, 1}.
        probability: float32 foreground probability in [0, 1].
        entropy: float32 voxel entropy in nats, in [0, ln 2].
    """

    mask: sitk.Image
    probability: sitk.Image
    entropy: sitk.Image


def read_recipe(path: str | Path) -> PreprocessOptions:
    """Read the ``options`` of a ``preprocess.json`` (or a bare options mapping, JSON/YAML).

    Raises:
        InputError: unreadable file, or invalid options (naming the key).
    """
    p = Path(path)
    data = read_yaml(p, "preprocessing recipe", expect="a mapping of preprocessing options")
    if isinstance(data.get("options"), dict):
        data = data["options"]
    return options_from_mapping(data, PreprocessOptions(), str(p))


def _builtin_recipe(dataset: str) -> PreprocessOptions | None:
    if dataset in ("la", "la-raw"):
        from semiseg3d.data import convert_la

        return convert_la.default_options()
    if dataset == "pancreas":
        from semiseg3d.data import convert_pancreas

        return convert_pancreas.default_options()
    if dataset == "brats":
        from semiseg3d.data import convert_brats

        return convert_brats.default_options()
    if dataset == "synthetic":  # z-scored over the whole volume, no crop
        return PreprocessOptions()
    return None


def recipe_for_run(
    run_dir: Path, data_dir: str, dataset: str, explicit: str | Path | None = None
) -> tuple[PreprocessOptions, str]:
    """The preprocessing recipe of a run and where it came from (see the module docstring).

    Raises:
        InputError: no recipe found (the message lists the places looked at).
    """
    if explicit is not None:
        return read_recipe(explicit), str(explicit)
    candidates = [run_dir / _PREPROCESS_FILE]
    if data_dir:
        candidates.append(Path(data_dir) / _PREPROCESS_FILE)
    for c in candidates:
        if c.is_file():
            return read_recipe(c), str(c)
    builtin = _builtin_recipe(dataset)
    if builtin is not None:
        return builtin, f"built-in recipe of dataset '{dataset}'"
    looked = ", ".join(str(c) for c in candidates)
    raise InputError(
        f"{run_dir}: no preprocessing recipe for dataset '{dataset}' (looked for {looked}); "
        "pass --preprocess FILE (the preprocess.json of the training data)"
    )


def _downsample(array: np.ndarray, factor: int) -> np.ndarray:
    """Block mean over ``factor``^3 blocks (remainder at the high end dropped), as in training."""
    x, y, z = (s // factor for s in array.shape)
    if min(x, y, z) < 1:
        raise InputError(f"scan of shape {array.shape} is too small to downsample by {factor}")
    f = factor
    blocks = array[: x * f, : y * f, : z * f].reshape(x, f, y, f, z, f)
    return blocks.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def _upsample(array: np.ndarray, factor: int, shape: Sequence[int]) -> np.ndarray:
    """Undo :func:`_downsample` on (C, x, y, z): repeat each voxel, pad the dropped rest
    with the edge values."""
    out = array
    for axis in (1, 2, 3):
        out = np.repeat(out, factor, axis=axis)
    widths = [(0, 0)] + [(0, int(s) - n) for s, n in zip(shape, out.shape[1:], strict=True)]
    return np.pad(out, widths, mode="edge") if any(w[1] for w in widths) else out


def predict_image(
    image: sitk.Image,
    prob_fn: ProbFn,
    opts: PreprocessOptions,
    patch: Sequence[int],
    stride: Sequence[int],
    *,
    downsample: int = 1,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    where: str = "scan",
) -> Prediction:
    """Preprocess ``image``, run the sliding window, and map the result back to its grid.

    Args:
        image: the scan (any geometry).
        prob_fn: (B, 1, px, py, pz) -> (B, 2, px, py, pz) class probabilities.
        opts: the training data's preprocessing recipe.
        patch: window (x, y, z) in voxels (of the preprocessed, downsampled grid).
        stride: window step (x, y, z) in voxels.
        downsample: integer block-mean factor used in training.
        batch_size: windows per forward pass.
        device: inference device.
        amp_dtype: autocast dtype or None.
        channels_last: windows in ``torch.channels_last_3d`` (models converted by the caller).
        where: names the scan in errors.

    Returns:
        :class:`Prediction` on the grid of ``image``.
    """
    min_size = [int(p) * downsample for p in patch]  # the run's patch, on the full grid
    prep = prepare_inference(image, opts, where=where, min_size=min_size)
    array = prep.image
    if downsample > 1:
        array = _downsample(array, downsample)
    probs = sliding_window_probs(
        prob_fn,
        array,
        patch,
        stride,
        batch_size=batch_size,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
    )
    if downsample > 1:
        probs = _upsample(probs, downsample, prep.image.shape)
    probs = np.clip(probs.astype(np.float32), 0.0, 1.0)
    entropy = -np.sum(probs * np.log(probs + _EPS), axis=0).astype(np.float32)
    fg = prep.box.uncrop(probs[1], fill=0.0)
    ent = prep.box.uncrop(entropy, fill=0.0)
    fg_img = from_xyz(fg, prep.grid)
    ent_img = from_xyz(ent, prep.grid)
    if opts.spacing is not None:
        fg_img = resample_like(fg_img, image, sitk.sitkLinear, 0.0)
        ent_img = resample_like(ent_img, image, sitk.sitkLinear, 0.0)
    else:  # same voxel grid; copy the input's exact geometry
        fg_img.CopyInformation(image)
        ent_img.CopyInformation(image)
    mask = sitk.Cast(fg_img > 0.5, sitk.sitkUInt8)
    mask.CopyInformation(image)
    return Prediction(mask, fg_img, ent_img)


def _check_out(path: Path, option: str) -> None:
    if not path.name.lower().endswith(OUTPUT_SUFFIXES):
        raise InputError(
            f"{option} {path}: unsupported file type; use one of {list(OUTPUT_SUFFIXES)}"
        )


def _write(image: sitk.Image, tmp: Path, path: Path) -> None:
    """Write ``image`` to the temporary ``tmp`` of the output ``path`` and check it reads
    back intact (ITK does not report a full disk); an ``OSError`` names ``path``."""
    write_image(image, tmp, name=path)


def predict_scan(
    run_dir: str | Path,
    scan: str | Path,
    out: str | Path,
    *,
    probs_out: str | Path | None = None,
    entropy_out: str | Path | None = None,
    device: str | None = None,
    preprocess: str | Path | None = None,
    batch_size: int = 4,
    overrides: Mapping[str, Any] | None = None,
    verbose: bool = True,
) -> Prediction:
    """Segment ``scan`` with the run in ``run_dir``; write the mask (and maps) on its grid.

    Args:
        run_dir: finished run folder (``model_final.pt``).
        scan: NIfTI / NRRD file or DICOM folder.
        out: mask file (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``).
        probs_out: optional foreground-probability file.
        entropy_out: optional entropy file.
        device: ``cpu`` or ``cuda`` (default: CUDA when available, unless the run says cpu).
        preprocess: a recipe file overriding the run's.
        batch_size: windows per forward pass.
        overrides: inference-only config keys to read the weights by (``--set``,
            :func:`~semiseg3d.inference.overrides.apply_inference_overrides`).
        verbose: print a summary line.

    Returns:
        The :class:`Prediction`.

    Raises:
        InputError: missing run or scan, unreadable scan, no recipe, CUDA asked for but not
            available, unsupported output type, a key of ``overrides`` that is not
            inference-only for the run's method.
    """
    run = Path(run_dir)
    out = Path(out)
    targets = [(out, "--out")]
    if probs_out is not None:
        targets.append((Path(probs_out), "--probs"))
    if entropy_out is not None:
        targets.append((Path(entropy_out), "--entropy"))
    for path, option in targets:
        _check_out(path, option)
        remove_stale_temps(path)  # what a killed earlier run of this command left
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if not run.is_dir():
        raise InputError(f"{run}: run folder not found")
    with contextlib.ExitStack() as stack:
        # every output gets its temporary file before any work (a bad path fails here);
        # the temporaries are renamed together when the block ends, or all removed
        temps = [(stack.enter_context(atomic_path(path)), path, opt) for path, opt in targets]
        t0 = time.monotonic()
        cfg, nets = load_trained(run)
        cfg = apply_inference_overrides(cfg, overrides or {})
        if device not in (None, "cpu", "cuda"):
            raise InputError(f"--device must be cpu or cuda, got {device!r}")
        accel = runtime_for(cfg, nets, batch_size, device)
        dev = accel.device
        opts, source = recipe_for_run(run, cfg.data_dir, cfg.dataset, preprocess)
        image = read_image(scan)
        members, prob_fn, lcc = prepared_rule(cfg, nets, accel)
        pred = predict_image(
            image,
            prob_fn,
            opts,
            cfg.patch,
            cfg.stride,
            downsample=cfg.downsample,
            batch_size=batch_size,
            device=dev,
            amp_dtype=accel.dtype,
            channels_last=accel.channels_last,
            where=str(scan),
        )
        if lcc:
            kept = sitk.GetImageFromArray(
                largest_connected_component(sitk.GetArrayFromImage(pred.mask)).astype(np.uint8)
            )
            kept.CopyInformation(pred.mask)
            pred = Prediction(kept, pred.probability, pred.entropy)
        images = {"--out": pred.mask, "--probs": pred.probability, "--entropy": pred.entropy}
        for tmp, path, option in temps:
            _write(images[option], tmp, path)
    if verbose:
        n_fg = int(np.count_nonzero(sitk.GetArrayViewFromImage(pred.mask)))
        size = "x".join(str(s) for s in image.GetSize())
        print(
            f"{scan}: {size}, {n_fg} foreground voxels -> {out} "
            f"(recipe: {source}; {dev.type}; {time.monotonic() - t0:.1f} s)"
        )
    return pred


# -- semiseg3d predict ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d predict``."""
    add_path_options(
        parser,
        [
            ("--run", "DIR", "trained run folder"),
            ("--input", "SCAN", "NIfTI / NRRD file or DICOM folder"),
            ("--out", "FILE", "mask file (.nii.gz)"),
        ],
        required=True,
    )
    add_path_options(
        parser,
        [
            ("--probs", "FILE", "also write the foreground probability"),
            ("--entropy", "FILE", "also write the voxel entropy (nats)"),
        ],
        required=False,
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    add_path_options(
        parser, [("--preprocess", "FILE", "recipe (preprocess.json) of the training data")], False
    )
    parser.add_argument(
        "--batch-size", type=int, default=4, metavar="N", help="windows per forward pass"
    )
    add_set_option(
        parser,
        "read the weights another way through a key the method declares inference-only "
        "(URPC: method_options.infer=mean; MC-Net(+): mcnet_infer=mean)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``semiseg3d predict``; returns 0."""
    predict_scan(
        args.run,
        args.input,
        args.out,
        probs_out=args.probs,
        entropy_out=args.entropy,
        device=args.device,
        preprocess=args.preprocess,
        batch_size=args.batch_size,
        overrides=parse_overrides(args.overrides),
    )
    return 0
