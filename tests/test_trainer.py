"""Trainer on real LA crops, and the ``semiseg3d train`` / ``semiseg3d test`` commands."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import cpu_bf16_trains
from test_checkpoint_resume import SHAPE, write_synthetic

from semiseg3d.cli import main as cli_main
from semiseg3d.config.run import TrainConfig, load_config
from semiseg3d.data.volumes import case_path, downsample_volume, load_volume, read_list
from semiseg3d.io.atomic import MARKER_NAME
from semiseg3d.training.trainer import train


def write_la_crops(
    la_dir: Path, root: Path, n: int = 2, size: tuple[int, int, int] = (48, 48, 40)
) -> None:
    """The first ``n`` LA training cases, downsampled by 2 and cropped around the atrium."""
    root.mkdir(parents=True)
    ids = read_list(la_dir / "train.list")[:n]
    for case in ids:
        vol = downsample_volume(load_volume(case_path(la_dir, case)), 2)
        assert vol.label is not None
        centre = np.argwhere(vol.label).mean(axis=0).round().astype(int)
        lo = [
            int(np.clip(c - s // 2, 0, dim - s))
            for c, s, dim in zip(centre, size, vol.shape, strict=True)
        ]
        box = tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))
        with h5py.File(root / f"{case}.h5", "w") as f:
            f["image"] = vol.image[box]
            f["label"] = vol.label[box]
    (root / "train.list").write_text("\n".join(ids) + "\n")


def test_short_run_on_real_la_crops_lowers_the_supervised_loss(
    la_dir: Path, tmp_path: Path
) -> None:
    write_la_crops(la_dir, tmp_path / "la")
    cfg = TrainConfig(
        data_dir=str(tmp_path / "la"),
        method="suponly",
        labeled=2,
        patch=(32, 32, 32),
        iterations=20,
        lr=0.05,
        lr_steps=(1000,),
        checkpoint_every=1000,
        num_workers=0,
        seed=3,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.finished and len(result.history) == 20
    sup = [h["sup_ce_b"] + h["sup_dice_b"] for h in result.history]
    first, last = sum(sup[:5]) / 5, sum(sup[-5:]) / 5
    assert last < 0.8 * first, f"supervised loss did not drop: first {sup[:5]}, last {sup[-5:]}"
    log = (tmp_path / "run" / "train.log").read_text()
    assert "2 labeled + 0 unlabeled" in log


def test_train_and_test_commands_write_the_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data_dir: {data}\nlabeled: 2\npatch: [16, 16, 16]\nstride: [8, 8, 8]\n"
        "iterations: 2\ncheckpoint_every: 5\nnum_workers: 0\n"
    )
    run = tmp_path / "run"
    # bf16 where this CPU passes the self-check for this run, else the refusal and float32
    amp = "bf16" if cpu_bf16_trains(load_config(config, {"mode": "code_faithful"})) else "none"
    sets = ["mode=code_faithful", "amp=bf16", "perturbation=gaussian", "extra={variant: x}"]
    argv = ["train", "--config", str(config), "--out", str(run)]
    for item in sets:
        argv += ["--set", item]
    if amp == "none":
        capsys.readouterr()
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "config key 'amp' = 'bf16': this CPU computes dual" in err[0]
        assert not run.exists()
        argv[argv.index("amp=bf16")] = "amp=none"
    assert cli_main(argv) == 0
    for name in (
        "config.yaml",
        "model_final.pt",
        "train.log",
        "live/metrics.json",
    ):
        assert (run / name).is_file(), name
    assert not (run / "checkpoint.pt").exists()  # a finished run does not keep it
    assert not list(run.rglob("dvc.yaml"))
    log = (run / "train.log").read_text()
    precision = {"bf16": "bf16", "none": "fp32"}[amp]
    assert f"precision {precision} (amp '{amp}')" in log
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["amp"] == amp and saved["runtime"]["precision"] == precision
    assert saved["runtime"]["device"] == "cpu"
    # code_faithful: the prototype loss is NaN by design and the run goes on
    assert "pgl=nan" in log and "finished 2 iterations" in log
    final = torch.load(run / "model_final.pt", weights_only=True)
    assert final["config"]["mode"] == "code_faithful" and final["config"]["extra"] == {
        "variant": "x"
    }

    # a changed config in the same folder is refused, naming the key
    capsys.readouterr()
    assert cli_main([*argv, "--set", "iterations=3"]) == 2
    err = capsys.readouterr().err
    assert "semiseg3d train: error:" in err and "['iterations']" in err

    assert cli_main(["test", "--run", str(run), "--batch-size", "3"]) == 0
    test_ids = read_list(data / "test.list")
    for case in test_ids:
        img = nib.load(str(run / "predictions" / f"{case}.nii.gz"))
        assert img.shape == SHAPE
        assert tuple(float(z) for z in img.header.get_zooms()) == (1.0, 1.0, 2.0)
        assert set(img.get_fdata().ravel().tolist()) <= {0.0, 1.0}
    table = pd.read_csv(run / "metrics.csv")
    assert table["case"].tolist() == [*test_ids, "mean", "sd", "sem"]
    assert {"dice", "jaccard", "hd95", "asd", "empty_pred", "hd95_mm", "asd_mm"} <= set(
        table.columns
    )
    assert table["dice"].between(0, 1).all()

    # one subnet alone: separate outputs, the ensemble's files untouched
    assert cli_main(["test", "--run", str(run), "--subnet", "a"]) == 0
    assert (run / "metrics_a.csv").is_file()
    assert sorted(p.name for p in (run / "predictions_a").iterdir() if p.name != MARKER_NAME) == [
        f"{c}.nii.gz" for c in test_ids
    ]
    assert pd.read_csv(run / "metrics.csv").equals(table)

    # errors are one line and exit 2
    assert cli_main(["test", "--run", str(tmp_path / "nothing")]) == 2
    assert "model_final.pt: final model not found" in capsys.readouterr().err
