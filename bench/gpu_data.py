"""Data for ``bench/gpu_check.sh``: LA-lite's halved volumes packed small enough to travel.

The GPU machine gets a copy of the repository and the folders named in the device tool's
``carry`` (64 MiB in all), not ``../shared``. Full-resolution LA is 223 MB (gzip h5), so it
cannot travel; LA-lite only needs the volumes halved (:func:`~semiseg3d.data.volumes.
downsample_volume` with factor 2, what ``bench/la_lite.py`` trains on), and those pack
losslessly into about 36 MB:

- LA's images are z-scored integers, so each full-resolution volume has only 70-190
  distinct values, and each halved volume (means of 2 x 2 x 2 blocks) at most a few thousand:
  the halved image is stored as a uint16 index into its sorted distinct values (float32),
  which rebuilds the float32 array bit for bit (a volume with more than 65,535 distinct
  values is stored as float32 instead);
- labels are bit-packed; each case is one xz-compressed ``.npz`` (``<ID>.npz.xz``);
- ``manifest.json`` holds every case's shape, spacing and the SHA-256 of its halved image
  and label bytes, checked when the cache is unpacked.

Commands::

    python bench/gpu_data.py pack --la ../shared/data/LA --out .gpu_data/la_lite   # here
    python bench/gpu_data.py unpack --cache .gpu_data/la_lite --out /tmp/la_halved  # there
    python bench/gpu_data.py volumes --out DIR --cases 16 --shape 192 144 88        # speed

``unpack`` writes ``<ID>.h5`` files (image, label; the dataset layout every consumer reads)
and the two lists: a dataset that ``bench/la_lite.py --downsample 1`` trains on exactly as
it trains on LA with ``--downsample 2``. ``volumes`` writes quick ellipsoid-plus-noise
volumes of a given shape (LA-sized ones for the 112 x 112 x 80 speed rows where the real
volumes are not at hand; speed does not depend on the image content) and ``--lite`` small
cases in the LA layout (``<ID>/mri_norm2.h5``, no spacing, quantised intensities) for the
dry run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from semiseg3d.data.volumes import case_path, downsample_volume, load_volume, read_list
from semiseg3d.errors import InputError

__all__ = ["pack", "unpack", "write_volumes", "main"]

MANIFEST = "manifest.json"
SUFFIX = ".npz.xz"
LISTS = ("train.list", "test.list")


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def pack(la: Path, out: Path, factor: int = 2) -> dict[str, Any]:
    """Halve every case of ``train.list`` + ``test.list`` under ``la`` and pack it to ``out``.

    Returns:
        The manifest (also written to ``out/manifest.json``).
    """
    ids = [i for name in LISTS for i in read_list(la / name)]
    out.mkdir(parents=True, exist_ok=True)
    cases: dict[str, Any] = {}
    for case in ids:
        vol = downsample_volume(load_volume(case_path(la, case)), factor)
        assert vol.label is not None
        values, index = np.unique(vol.image, return_inverse=True)
        arrays: dict[str, np.ndarray] = {"label": np.packbits(vol.label.ravel())}
        if len(values) <= np.iinfo(np.uint16).max:
            arrays["index"] = index.reshape(vol.shape).astype(np.uint16)
            arrays["values"] = values.astype(np.float32)
        else:
            arrays["image"] = vol.image
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (out / f"{case}{SUFFIX}").write_bytes(lzma.compress(buf.getvalue(), preset=6))
        cases[case] = {
            "shape": list(vol.shape),
            "spacing": None if vol.spacing is None else list(vol.spacing),
            "image_sha256": _digest(vol.image),
            "label_sha256": _digest(vol.label),
        }
    for name in LISTS:
        (out / name).write_text((la / name).read_text(encoding="utf-8"), encoding="utf-8")
    manifest = {"source": str(la), "downsample": factor, "cases": cases}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def unpack(cache: Path, out: Path) -> list[str]:
    """Rebuild the halved dataset of ``cache`` as ``out/<ID>.h5`` + lists; returns the ids.

    Raises:
        InputError: no manifest, a missing case file, or a rebuilt array whose SHA-256
            differs from the manifest's.
    """
    if not (cache / MANIFEST).is_file():
        raise InputError(f"{cache}: no {MANIFEST} (build it with: bench/gpu_data.py pack)")
    manifest = json.loads((cache / MANIFEST).read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    for case, meta in manifest["cases"].items():
        path = cache / f"{case}{SUFFIX}"
        if not path.is_file():
            raise InputError(f"{path}: missing")
        arrays = np.load(io.BytesIO(lzma.decompress(path.read_bytes())))
        shape = tuple(meta["shape"])
        if "index" in arrays:
            image = arrays["values"][arrays["index"]]
        else:
            image = arrays["image"]
        n = int(np.prod(shape))
        label = np.unpackbits(arrays["label"])[:n].reshape(shape)
        if _digest(image) != meta["image_sha256"] or _digest(label) != meta["label_sha256"]:
            raise InputError(f"{path}: rebuilt volume differs from the manifest's checksum")
        with h5py.File(out / f"{case}.h5", "w") as f:
            f["image"] = image
            f["label"] = label
            if meta["spacing"] is not None:
                f.attrs["spacing"] = np.asarray(meta["spacing"], dtype=np.float64)
    for name in LISTS:
        (out / name).write_text((cache / name).read_text(encoding="utf-8"), encoding="utf-8")
    return list(manifest["cases"])


def write_volumes(
    out: Path, n_train: int, n_test: int, shape: tuple[int, int, int], lite: bool, seed: int = 0
) -> None:
    """Quick ellipsoid-plus-noise cases (image float32, label uint8, (x, y, z)).

    ``lite``: the LA layout (``<ID>/mri_norm2.h5``, no spacing) with intensities on a grid of
    64 values, like LA's z-scored integers; else ``<ID>.h5`` with spacing 1 mm.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    axes = [np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape]
    ids = [f"case{i:03d}" for i in range(n_train + n_test)]
    for case in ids:
        centre = rng.uniform(-0.25, 0.25, 3).astype(np.float32)
        radii = rng.uniform(0.35, 0.55, 3).astype(np.float32)
        dist = sum(
            ((a - c) / r).reshape([-1 if k == i else 1 for k in range(3)]) ** 2
            for i, (a, c, r) in enumerate(zip(axes, centre, radii, strict=True))
        )
        label = (dist <= 1.0).astype(np.uint8)
        image = label + rng.normal(0.0, 0.4, shape).astype(np.float32)
        if lite:
            image = np.round(np.clip(image, -1.5, 2.5) * 16.0) / 16.0
            path = out / case / "mri_norm2.h5"
            path.parent.mkdir(exist_ok=True)
        else:
            path = out / f"{case}.h5"
        with h5py.File(path, "w") as f:
            f["image"] = image.astype(np.float32)
            f["label"] = label
            if not lite:
                f.attrs["spacing"] = [1.0, 1.0, 1.0]
    (out / "train.list").write_text("".join(f"{c}\n" for c in ids[:n_train]), encoding="utf-8")
    (out / "test.list").write_text("".join(f"{c}\n" for c in ids[n_train:]), encoding="utf-8")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="halve and pack an LA-layout dataset")
    a.add_argument("--la", required=True, type=Path, help="LA folder (train.list, test.list)")
    a.add_argument("--out", required=True, type=Path)
    a.add_argument("--downsample", type=int, default=2)
    b = sub.add_parser("unpack", help="rebuild the halved dataset as <ID>.h5 files")
    b.add_argument("--cache", required=True, type=Path)
    b.add_argument("--out", required=True, type=Path)
    c = sub.add_parser("volumes", help="quick synthetic volumes")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--cases", type=int, default=16, help="training cases")
    c.add_argument("--test", type=int, default=2, help="test cases")
    c.add_argument("--shape", type=int, nargs=3, default=(192, 144, 88))
    c.add_argument("--lite", action="store_true", help="LA layout, quantised intensities")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    try:
        if args.cmd == "pack":
            manifest = pack(args.la, args.out, args.downsample)
            print(
                f"gpu_data: packed {len(manifest['cases'])} cases of {args.la} halved by "
                f"{args.downsample} into {args.out} ({_size(args.out) / 2**20:.1f} MiB, "
                f"{time.monotonic() - t0:.0f} s)"
            )
        elif args.cmd == "unpack":
            ids = unpack(args.cache, args.out)
            print(
                f"gpu_data: {len(ids)} cases rebuilt in {args.out}, checksums match "
                f"({time.monotonic() - t0:.1f} s)"
            )
        else:
            write_volumes(args.out, args.cases, args.test, tuple(args.shape), args.lite)
            print(f"gpu_data: {args.cases} + {args.test} volumes {args.shape} in {args.out}")
    except InputError as exc:
        print(f"gpu_data.py {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
