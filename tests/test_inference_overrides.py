"""``semiseg3d test --set``: a finished run read another way through an inference-only key
(URPC's ``method_options.infer``), without touching the run's own outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from semiseg3d.cli import main as cli_main
from semiseg3d.config.run import TrainConfig
from semiseg3d.errors import InputError
from semiseg3d.evaluation.test_run import test_run as score_run
from semiseg3d.inference.overrides import apply_inference_overrides, override_tag
from semiseg3d.inference.rule import load_trained
from semiseg3d.methods import get_method, method_class


@pytest.fixture(scope="module")
def urpc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A URPC run of 3 steps on a 6 + 1 case synthetic dataset, scored once as trained."""
    from semiseg3d.data.synthetic import SynthParams, write_dataset
    from semiseg3d.training.trainer import train

    root = tmp_path_factory.mktemp("urpc")
    data = root / "data"
    write_dataset(data, SynthParams(n_train=6, n_test=1, shape=(32, 32, 16), seed=0))
    cfg = TrainConfig(
        data_dir=str(data),
        dataset="synthetic",
        method="urpc",
        labeled=2,
        patch=(16, 16, 16),
        stride=(16, 16, 16),
        iterations=3,
        lr=0.05,
        lr_steps=(),
        rampup_unit=1,
        num_workers=0,
        device="cpu",
        seed=5,
    )
    run = root / "run"
    assert train(cfg, run, progress=False).finished
    score_run(run, verbose=False)
    return run


@pytest.fixture(scope="module")
def written_run(urpc_run: Path) -> Path:
    """The same weights with ``method_options: {infer: mean}`` written into the config
    that ``model_final.pt`` carries: the route that needs no ``--set``."""
    other = urpc_run.parent / "written"
    other.mkdir()
    final = torch.load(urpc_run / "model_final.pt", weights_only=False)
    assert final["config"]["method_options"] == {}
    final["config"]["method_options"] = {"infer": "mean"}
    torch.save(final, other / "model_final.pt")
    return other


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): _digest(p) for p in sorted(run.rglob("*")) if p.is_file()}


def test_override_tag_names_the_setting() -> None:
    assert override_tag({}) == ""
    assert override_tag({"method_options.infer": "mean"}) == "infer-mean"
    assert override_tag({"mcnet_infer": "mean"}) == "mcnet_infer-mean"
    assert override_tag({"method_options.flag": True, "k": "a b/c"}) == "flag-true_k-a-b-c"


def test_inference_keys_are_declared_by_the_methods() -> None:
    assert method_class("urpc").inference_keys == ("method_options.infer",)
    assert method_class("mcnet").inference_keys == ("mcnet_infer",)
    assert method_class("mcnet_plus").inference_keys == ("mcnet_infer",)
    assert method_class("dual").inference_keys == ()


def test_override_changes_the_rule_to_the_mean_of_the_heads(urpc_run: Path) -> None:
    cfg, nets = load_trained(urpc_run)
    read = apply_inference_overrides(cfg, {"method_options.infer": "mean"})
    assert read.method_options == {"infer": "mean"} and cfg.method_options == {}
    assert {**read.to_dict(), "method_options": {}} == cfg.to_dict()  # nothing else moved
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        heads = nets["vnet"](x)
        by_hand = sum(torch.softmax(z, dim=1) for z in heads) / 4
        main = torch.softmax(heads[0], dim=1)
        method = get_method(read)
        probs = method.prob_fn(method.inference_nets(nets, None))(x)
    assert torch.allclose(probs, by_hand, atol=1e-6)
    assert not torch.allclose(probs, main, atol=1e-3)  # the heads of the trained net differ


def test_cli_set_writes_tagged_outputs_and_keeps_the_runs_own(
    urpc_run: Path, written_run: Path
) -> None:
    own = _digest(urpc_run / "metrics.csv")
    own_pred = _listing(urpc_run / "predictions")
    code = cli_main(["test", "--run", str(urpc_run), "--set", "method_options.infer=mean"])
    assert code == 0
    assert _digest(urpc_run / "metrics.csv") == own
    assert _listing(urpc_run / "predictions") == own_pred
    table = pd.read_csv(urpc_run / "metrics_infer-mean.csv")
    assert list(table["case"]) == list(pd.read_csv(urpc_run / "metrics.csv")["case"])
    assert (urpc_run / "metrics_lcc_infer-mean.csv").is_file()
    # the same weights with the setting written into the run's config: the same masks
    other = written_run
    score_run(other, verbose=False)
    written = pd.read_csv(other / "metrics.csv")
    pd.testing.assert_frame_equal(written, table, check_exact=False, rtol=1e-9)
    for mask in sorted((urpc_run / "predictions_infer-mean").glob("*.nii.gz")):
        a = np.asarray(nib.load(mask).dataobj)
        b = np.asarray(nib.load(other / "predictions" / mask.name).dataobj)
        assert np.array_equal(a, b), mask.name


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lr=0.1", "--set lr: not an inference setting of method 'urpc'"),
        ("mcnet_infer=mean", "through method_options.infer"),
        ("method_options.infer=bogus", "method_options.infer"),
        ("method_options.infer", "expected KEY=VALUE"),
    ],
)
def test_refused_settings_are_one_line_and_write_nothing(
    urpc_run: Path, item: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _listing(urpc_run)
    assert cli_main(["test", "--run", str(urpc_run), "--set", item]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert _listing(urpc_run) == before


def test_library_call_refuses_a_training_key(urpc_run: Path) -> None:
    with pytest.raises(InputError, match="--set seed: not an inference setting"):
        score_run(urpc_run, overrides={"seed": 1}, verbose=False)


def test_predict_set_reads_the_scan_like_the_written_config(
    urpc_run: Path, written_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with h5py.File(urpc_run.parent / "data" / "synth_0006.h5") as f:
        volume = np.asarray(f["image"], dtype=np.float32)  # (X, Y, Z)
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(volume.transpose(2, 1, 0)), str(scan))

    def probs(run: Path, name: str, *extra: str) -> np.ndarray:
        out = tmp_path / f"{name}.nii.gz"
        args = ["predict", "--run", str(run), "--input", str(scan), "--out", str(out)]
        assert cli_main([*args, "--probs", str(tmp_path / f"{name}_p.nii.gz"), *extra]) == 0
        return sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{name}_p.nii.gz")))

    mean = probs(urpc_run, "mean", "--set", "method_options.infer=mean")
    assert np.array_equal(mean, probs(written_run, "written"))
    assert not np.allclose(mean, probs(urpc_run, "main"), atol=1e-3)
    before = sorted(p.name for p in tmp_path.iterdir())
    bad = ["predict", "--run", str(urpc_run), "--input", str(scan), "--out"]
    capsys.readouterr()
    assert cli_main([*bad, str(tmp_path / "x.nii.gz"), "--set", "patch=[32,32,32]"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--set patch: not an inference setting of method 'urpc'" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
