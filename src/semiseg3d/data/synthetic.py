"""The synthetic demo dataset: small MRI-like volumes with one smooth foreground organ.

Each case is drawn from its own random generator, seeded by ``(seed, case index)``, so a
dataset is a pure function of its parameters and reruns are byte-identical (h5 object
timestamps are switched off). A volume is built in five steps:

1. **Organ**: a randomly placed, randomly stretched ellipsoid whose surface is deformed by a
   smooth random field; the level set is thresholded so that the foreground covers a random
   6-16 % of the volume, and only its largest connected component is kept.
2. **Tissue**: the background is split into three tissue classes (dark, mid, bright) by the
   level sets of a second smooth random field; the organ is brightest, with a fine texture.
   The bright tissue class is close enough to the organ that, after the bias field and
   noise, a global threshold cannot separate them. A dark one-voxel rim (a fat plane)
   surrounds about 60 % of the organ's surface, a cue that a network can use and a threshold
   cannot.
3. **Partial volume**: a small Gaussian blur softens the class boundaries.
4. **Bias field**: a smooth multiplicative field ``exp(b)``, ``b`` a heavily smoothed random
   field scaled to a standard deviation of 0.2.
5. **Noise**: Rician (magnitude of the image plus complex Gaussian noise), then a z-score
   over the whole volume.

Output folder (the preprocessed dataset layout every consumer reads): ``<ID>.h5`` with
``image`` (float32) and ``label`` (uint8 in {0, 1}), both (x, y, z), a root attribute
``spacing`` (x, y, z in mm); ``train.list`` and ``test.list``.

Command line::

    semiseg3d synth --out data/processed/synthetic --cases 16 --test 4 \\
        --shape 48 48 32 --seed 0 [--spacing 1 1 1]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

from semiseg3d.cliargs import add_xyz_option
from semiseg3d.errors import InputError
from semiseg3d.io.atomic import atomic_dir, remove_stale_temps

__all__ = [
    "SynthParams",
    "case_ids",
    "synth_case",
    "write_dataset",
    "add_arguments",
    "main",
]

#: smallest axis the networks accept (four stride-2 stages)
MIN_AXIS = 16
#: largest axis accepted (the demo is meant to be small)
MAX_AXIS = 512
#: range of the foreground fraction drawn per case (before keeping the largest component)
FG_FRACTION_RANGE = (0.06, 0.16)
#: mean intensities of the three background tissue classes and of the organ (before bias/noise)
TISSUE_MEANS = (0.15, 0.40, 0.65)
ORGAN_MEAN = 1.0
#: mean intensity of the one-voxel dark rim (a fat plane) around most of the organ
RIM_MEAN = 0.25
#: fraction of the organ's surroundings that carry the rim (the rest touches tissue directly)
RIM_COVER = 0.6
#: relative amplitude of the organ's texture
ORGAN_TEXTURE = 0.08
#: standard deviation of the log bias field
BIAS_STD = 0.2
#: standard deviation of each component of the complex Gaussian noise (Rician magnitude)
NOISE_STD = 0.12
#: Gaussian blur (voxels) that imitates the partial-volume effect
PARTIAL_VOLUME_SIGMA = 0.7


@dataclass(frozen=True)
class SynthParams:
    """Parameters of a synthetic dataset.

    Attributes:
        n_train: number of training cases (written to ``train.list``).
        n_test: number of test cases (written to ``test.list``).
        shape: volume shape (x, y, z) in voxels; every axis in [16, 512].
        seed: base seed (non-negative integer).
        spacing: voxel size (x, y, z) in mm, stored as the h5 root attribute ``spacing``.
    """

    n_train: int = 16
    n_test: int = 4
    shape: tuple[int, int, int] = (48, 48, 32)
    seed: int = 0
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        _validate(self)


def _validate(p: SynthParams) -> None:
    if isinstance(p.n_train, bool) or not isinstance(p.n_train, int) or p.n_train < 1:
        raise InputError(f"--cases must be a positive integer, got {p.n_train!r}")
    if isinstance(p.n_test, bool) or not isinstance(p.n_test, int) or p.n_test < 1:
        raise InputError(f"--test must be a positive integer, got {p.n_test!r}")
    if p.n_train + p.n_test > 100_000:
        raise InputError(f"--cases + --test must be at most 100000, got {p.n_train + p.n_test}")
    shape = tuple(p.shape)
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
        raise InputError(f"--shape must be three integers X Y Z, got {list(shape)}")
    if not all(MIN_AXIS <= v <= MAX_AXIS for v in shape):
        raise InputError(f"--shape {list(shape)}: every axis must be in [{MIN_AXIS}, {MAX_AXIS}]")
    if isinstance(p.seed, bool) or not isinstance(p.seed, int) or p.seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {p.seed!r}")
    spacing = tuple(p.spacing)
    if len(spacing) != 3 or not all(
        isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in spacing
    ):
        raise InputError(f"--spacing must be three positive finite numbers, got {list(spacing)}")


def case_ids(n_train: int, n_test: int) -> tuple[list[str], list[str]]:
    """Case ids of the training and test lists: ``synth_0000`` ... in one running number."""
    ids = [f"synth_{i:04d}" for i in range(n_train + n_test)]
    return ids[:n_train], ids[n_train:]


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], sigma: float
) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma`` voxels, scaled to zero mean, unit SD."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    field -= field.mean()
    sd = field.std()
    return field / sd if sd > 0 else field


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def synth_case(
    rng: np.random.Generator, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic case.

    Args:
        rng: the case's random generator (consumed in a fixed order).
        shape: volume shape (x, y, z) in voxels.

    Returns:
        ``(image, label)``: image (x, y, z) float32, z-scored over the volume; label (x, y, z)
        uint8 in {0, 1}, one connected foreground component.
    """
    shape = tuple(int(v) for v in shape)
    scale = float(min(shape))
    # normalised coordinates in [-1, 1] per axis
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")

    # 1. organ: deformed ellipsoid, thresholded to a random foreground fraction
    centre = rng.uniform(-0.3, 0.3, size=3)
    radii = rng.uniform(0.7, 1.3, size=3)
    dist = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)))
    deform = _smooth_field(rng, shape, sigma=scale / 8.0)
    level = dist + 0.25 * deform
    fraction = rng.uniform(*FG_FRACTION_RANGE)
    organ = level <= np.quantile(level, fraction)
    organ = _largest_component(organ)

    # 2. tissue classes and the organ's texture
    tissue_field = _smooth_field(rng, shape, sigma=scale / 10.0)
    cuts = np.quantile(tissue_field, [0.4, 0.8])
    tissue = np.digitize(tissue_field, cuts)  # 0 dark, 1 mid, 2 bright
    image = np.asarray(TISSUE_MEANS)[tissue]
    shell = ndimage.binary_dilation(organ) & ~organ
    rim_field = _smooth_field(rng, shape, sigma=scale / 8.0)
    rim = shell & (rim_field <= np.quantile(rim_field[shell], RIM_COVER) if shell.any() else shell)
    image = np.where(rim, RIM_MEAN, image)
    texture = _smooth_field(rng, shape, sigma=1.0)
    image = np.where(organ, ORGAN_MEAN * (1.0 + ORGAN_TEXTURE * texture), image)

    # 3. partial volume, 4. bias field, 5. Rician noise and z-score
    image = ndimage.gaussian_filter(image, sigma=PARTIAL_VOLUME_SIGMA, mode="nearest")
    bias = np.exp(BIAS_STD * _smooth_field(rng, shape, sigma=scale / 3.0))
    image = image * bias
    n_re = rng.standard_normal(shape) * NOISE_STD
    n_im = rng.standard_normal(shape) * NOISE_STD
    image = np.sqrt((image + n_re) ** 2 + n_im**2)
    image = (image - image.mean()) / image.std()
    return image.astype(np.float32), organ.astype(np.uint8)


def _write_case(path: Path, image: np.ndarray, label: np.ndarray, spacing: Sequence[float]) -> None:
    # track_times=False keeps the file bytes a pure function of the arrays
    with h5py.File(path, "w", track_order=False) as f:
        opts = {"compression": "gzip", "compression_opts": 4, "track_times": False}
        f.create_dataset("image", data=image, **opts)
        f.create_dataset("label", data=label, **opts)
        f.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)


def write_dataset(out: str | Path, params: SynthParams) -> list[str]:
    """Generate the dataset folder ``out`` atomically, replacing an existing one only
    when semiseg3d wrote it (:func:`semiseg3d.io.atomic.atomic_dir`).

    Args:
        out: target folder.
        params: dataset parameters.

    Returns:
        All case ids, training cases first.

    Raises:
        InputError: a file, or a folder not written by semiseg3d, at ``out``.
    """
    train, test = case_ids(params.n_train, params.n_test)
    out = Path(out)
    remove_stale_temps(out)  # what a killed earlier run left
    with atomic_dir(out) as tmp:
        for index, case in enumerate(train + test):
            rng = np.random.default_rng([params.seed, index])
            image, label = synth_case(rng, params.shape)
            _write_case(tmp / f"{case}.h5", image, label, params.spacing)
        (tmp / "train.list").write_text("".join(f"{c}\n" for c in train), encoding="utf-8")
        (tmp / "test.list").write_text("".join(f"{c}\n" for c in test), encoding="utf-8")
    return train + test


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d synth``."""
    parser.add_argument("--out", required=True, type=Path, help="output dataset folder")
    parser.add_argument("--cases", type=int, default=16, help="training cases (default 16)")
    parser.add_argument("--test", type=int, default=4, help="test cases (default 4)")
    add_xyz_option(
        parser, "--shape", "volume shape in voxels (default 48 48 32)", default=(48, 48, 32)
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    add_xyz_option(
        parser,
        "--spacing",
        "voxel spacing in mm, stored as the h5 attribute 'spacing' (default 1 1 1)",
        kind=float,
        metavar=("SX", "SY", "SZ"),
        default=(1.0, 1.0, 1.0),
    )


def main(args: argparse.Namespace) -> int:
    """Run ``semiseg3d synth``."""
    params = SynthParams(
        n_train=args.cases,
        n_test=args.test,
        shape=tuple(args.shape),
        seed=args.seed,
        spacing=tuple(args.spacing),
    )
    ids = write_dataset(args.out, params)
    print(f"wrote {len(ids)} cases ({params.n_train} train, {params.n_test} test) to {args.out}")
    return 0
