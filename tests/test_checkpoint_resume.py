"""Checkpoints: complete, weights_only-loadable, and a stopped run resumes bit-identically."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from ellipsoids import write_ellipsoids

from semiseg3d.config.run import TrainConfig
from semiseg3d.errors import InputError, TrainingError
from semiseg3d.training import trainer as trainer_mod
from semiseg3d.training.checkpoint import config_differences, load_checkpoint
from semiseg3d.training.inputs import check_run_config
from semiseg3d.training.trainer import train

SHAPE = (24, 24, 20)
PATCH = [16, 16, 16]


def write_synthetic(root: Path, n_train: int = 6, n_test: int = 2, seed: int = 0) -> Path:
    """Tiny h5 cases of SHAPE: an ellipsoid (label 1) brighter than noise, lists of ids."""
    return write_ellipsoids(
        root,
        SHAPE,
        centre=(12, 12, 10),
        jitter=3,
        noise=0.3,
        spacing=(1.0, 1.0, 2.0),
        n_train=n_train,
        n_test=n_test,
        seed=seed,
    )


def tiny_config(data: Path, **overrides: object) -> TrainConfig:
    base: dict[str, object] = {
        "data_dir": str(data),
        "labeled": 2,
        "patch": tuple(PATCH),
        "stride": (8, 8, 8),
        "iterations": 4,
        "checkpoint_every": 2,
        "lr_steps": (1, 2),
        "num_workers": 0,
        "seed": 7,
    }
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth"))


def _tensors(obj: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list, by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


def test_stopped_and_resumed_run_is_bit_identical(data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(data, keep_checkpoint=True)  # keep the final state to compare it
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert straight.finished and straight.iteration == 4
    # lr of every iteration: 0.01 up to t = 1, x0.1 after the steps of t = 1 and t = 2
    assert [h["lr"] for h in straight.history] == pytest.approx([0.01, 0.01, 0.001, 0.0001])

    first = train(cfg, tmp_path / "resumed", stop_after=3, progress=False)
    assert not first.finished and first.iteration == 3
    assert not (tmp_path / "resumed" / "model_final.pt").exists()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["iteration"] == 2
    second = train(cfg, tmp_path / "resumed", progress=False)
    assert second.resumed_from == 2 and second.finished and len(second.history) == 2
    # the resumed iterations log the same values as the uninterrupted ones
    assert second.history == straight.history[2:]

    for name in ("model_final.pt", "checkpoint.pt"):
        a = torch.load(tmp_path / "straight" / name, weights_only=True)
        b = torch.load(tmp_path / "resumed" / name, weights_only=True)
        ta, tb = _tensors(a), _tensors(b)
        assert ta.keys() == tb.keys() and len(ta) > 100
        unequal = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not unequal, f"{name}: tensors differ after resume: {unequal[:5]}"
    final = torch.load(tmp_path / "resumed" / "model_final.pt", weights_only=True)
    assert set(final["models"]) == {"resnet", "vnet"} and final["iteration"] == 4
    ckpt = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert set(ckpt["optimizers"]) == {"resnet", "vnet"}
    assert {"python", "numpy", "torch", "cuda", "perturbation"} <= set(ckpt["rng"])

    # dvclive history was cut back to the checkpoint and continued: steps 0..3 once each
    with (tmp_path / "resumed" / "live" / "plots" / "metrics" / "train" / "lr.tsv").open() as f:
        steps = [int(row["step"]) for row in csv.DictReader(f, delimiter="\t")]
    assert steps == [0, 1, 2, 3]
    assert not (tmp_path / "resumed" / "dvc.yaml").exists()
    assert not (tmp_path / "resumed" / "live" / "dvc.yaml").exists()

    # a finished run is not trained again
    mtime = (tmp_path / "resumed" / "model_final.pt").stat().st_mtime_ns
    again = train(cfg, tmp_path / "resumed", progress=False)
    assert again.skipped and (tmp_path / "resumed" / "model_final.pt").stat().st_mtime_ns == mtime


def test_resume_refuses_a_changed_config(data: Path, tmp_path: Path) -> None:
    cfg = tiny_config(data)
    check_run_config(cfg, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["seed"] == 7 and saved["patch"] == PATCH
    check_run_config(cfg, tmp_path)  # same config: fine
    with pytest.raises(InputError, match=r"\['iterations', 'tau'\]"):
        check_run_config(tiny_config(data, iterations=5, tau=0.7), tmp_path)
    # num_workers does not change what is computed
    check_run_config(tiny_config(data, num_workers=1), tmp_path)


def test_config_differences_treats_lists_and_tuples_alike() -> None:
    assert config_differences({"patch": (1, 2), "a": 1}, {"patch": [1, 2], "a": 1}) == []
    assert config_differences({"a": 1}, {"a": 1, "b": None}) == []
    assert config_differences({"a": 1}, {"a": 2, "c": 3}) == ["a", "c"]


def test_nonfinite_term_stops_paper_run_and_keeps_last_good_checkpoint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import semiseg3d.methods.suponly as suponly

    real = suponly.suponly_objective
    calls = {"n": 0}

    def poisoned(out_b, label):  # type: ignore[no-untyped-def]
        loss, terms = real(out_b, label)
        calls["n"] += 1
        if calls["n"] == 3:  # iteration t = 2
            terms = {**terms, "sup_dice_b": torch.tensor(float("nan"))}
            loss = loss + terms["sup_dice_b"]
        return loss, terms

    monkeypatch.setattr(suponly, "suponly_objective", poisoned)
    cfg = tiny_config(data, method="suponly")
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"'sup_dice_b'.*iteration 2"):
        train(cfg, out, progress=False)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["iteration"] == 2  # the bad state was not saved
    assert not (out / "model_final.pt").exists()
    assert "error: non-finite loss term 'sup_dice_b'" in (out / "train.log").read_text()
    assert trainer_mod.STOP_AFTER_ENV == "SEMISEG3D_STOP_AFTER"


def test_finished_run_drops_its_checkpoint_unless_asked(data: Path, tmp_path: Path) -> None:
    """A finished run keeps what evaluation, predict and the report need, not checkpoint.pt."""
    cfg = tiny_config(data, method="suponly", iterations=3, checkpoint_every=2)
    out = tmp_path / "run"
    first = train(cfg, out, stop_after=2, progress=False)
    assert not first.finished and (out / "checkpoint.pt").is_file()  # the resume point
    # a killed checkpoint write and a killed final write left their temporaries
    (out / ".checkpoint.pt.k1ll3d.tmp.pt").write_bytes(b"\0" * 1000)
    (out / ".model_final.pt.k1ll3d.tmp.pt").write_bytes(b"\0" * 1000)
    second = train(cfg, out, progress=False)
    assert second.finished and second.resumed_from == 2
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.yaml", "live", "model_final.pt", "train.log"], names
    # keep_checkpoint: true keeps it (the same run folder: the key does not change the run)
    kept = train(
        tiny_config(data, method="suponly", iterations=3, keep_checkpoint=True),
        tmp_path / "kept",
        progress=False,
    )
    assert kept.finished
    assert load_checkpoint(tmp_path / "kept" / "checkpoint.pt")["iteration"] == 3
    again = train(
        tiny_config(data, method="suponly", iterations=3), tmp_path / "kept", progress=False
    )
    assert again.skipped and not (tmp_path / "kept" / "checkpoint.pt").exists()
