"""The published split lists of the three benchmark datasets (spec section 5).

* LA (fold 0): yulequan/UA-MT ``data/train.list`` (80) and ``data/test.list`` (20), identical
  to MCF's ``train0.list`` / ``test0.list``; shipped as ``checksums/la_{train,test}.txt``.
* Pancreas-CT (fold 0, MCF ``Flods``): train PANCREAS_0001-0062, test PANCREAS_0063-0082.
  The two cases TCIA later flagged as duplicates stay in, as in the published lists.
* BraTS-2019: HiLab-git/SSL4MIS ``data/BraTS2019/{train,val,test}.txt`` (250 / 25 / 60);
  shipped as ``checksums/brats2019_{train,val,test}.txt``.

The lists are package data (facts copied from the public repositories), read on demand.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["la_lists", "pancreas_lists", "brats_lists", "read_package_list", "PANCREAS_DUPLICATES"]

#: cases TCIA reportedly flagged as duplicates; kept, as the published lists keep them
PANCREAS_DUPLICATES: tuple[str, ...] = ("PANCREAS_0025", "PANCREAS_0070")


def read_package_list(name: str) -> list[str]:
    """The ids of the package data file ``semiseg3d/data/checksums/<name>`` (one per line)."""
    text = resources.files("semiseg3d.data").joinpath("checksums", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def la_lists() -> dict[str, list[str]]:
    """LA fold 0: ``{"train": 80 ids, "test": 20 ids}`` in the published order."""
    return {"train": read_package_list("la_train.txt"), "test": read_package_list("la_test.txt")}


def pancreas_lists() -> dict[str, list[str]]:
    """Pancreas-CT fold 0: ``{"train": PANCREAS_0001..0062, "test": PANCREAS_0063..0082}``."""
    return {
        "train": [f"PANCREAS_{i:04d}" for i in range(1, 63)],
        "test": [f"PANCREAS_{i:04d}" for i in range(63, 83)],
    }


def brats_lists() -> dict[str, list[str]]:
    """BraTS-2019 (SSL4MIS): ``{"train": 250, "val": 25, "test": 60}`` ids in published order."""
    return {k: read_package_list(f"brats2019_{k}.txt") for k in ("train", "val", "test")}
