"""The CUDA path of the trainer, ``semiseg3d test`` and ``semiseg3d predict`` (marker ``cuda``).

Skipped without a GPU; ``bench/gpu_check.sh`` runs them on the GPU machine. With
``SEMISEG3D_TEST_DEVICE=cpu`` (``bench/gpu_check.sh --cpu-dry-run``) the same tests run on
the CPU in float32 instead of bf16 / fp16 (the CPU refuses fp16, and bf16 there is the
business of ``tests/test_accel.py``), so that they cannot rot where no GPU is lent:

- every method trains a few iterations on synthetic volumes in bf16 and in fp16 with the
  gradient scaler, stopped after its first iteration and resumed: finite losses and weights,
  the precision and device it asked for, weights that moved;
- a run killed after 3 of 4 iterations (``SEMISEG3D_STOP_AFTER``, a separate process) and
  resumed in another ends with the weights of the uninterrupted run (bit for bit when two
  uninterrupted runs agree bit for bit, else within their own run-to-run difference);
- ``test`` and ``predict`` on the device against the CPU float32 prediction of the same
  run, recomputed here from the networks: per-case Dice >= 0.99.

The last two run for ``paper`` mode and SupOnly; every test id names its method, so
``-k suponly`` picks the cheap ones (what the CPU dry run does: the dual network at even
16^3 takes seconds per iteration on two shared cores).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
import yaml
from ellipsoids import write_ellipsoids

from semiseg3d.accel import Acceleration
from semiseg3d.config.registry import baseline_names
from semiseg3d.config.run import TrainConfig
from semiseg3d.training.checkpoint import load_checkpoint
from semiseg3d.training.trainer import STOP_AFTER_ENV, train

DEVICE = os.environ.get("SEMISEG3D_TEST_DEVICE", "cuda")
ON_GPU = DEVICE == "cuda"

pytestmark = [pytest.mark.cuda]
if ON_GPU and not torch.cuda.is_available():
    pytestmark.append(
        pytest.mark.skip(reason="no CUDA GPU (SEMISEG3D_TEST_DEVICE=cpu runs these on the CPU)")
    )

#: amp values tried for every method: bf16 and fp16 (+ gradient scaler) on the GPU; float32 on
#: the CPU, which refuses fp16
AMPS = ("bf16", "fp16") if ON_GPU else ("none",)
PRECISION_OF = {"bf16": "bf16", "fp16": "fp16", "none": "fp32"}

#: name -> config keys: the dual network's two modes, SupOnly and every registered comparison
#: method (a baseline added later is tried too); BCP needs a bottleneck larger than one voxel
#: for its half batches (patch 32 x 32 x 16) and a short pre-training stage
METHODS: dict[str, dict[str, Any]] = {
    "paper": {"method": "dual", "mode": "paper"},
    "code_faithful": {"method": "dual", "mode": "code_faithful"},
    "suponly": {"method": "suponly"},
    **{name: {"method": name} for name in baseline_names()},
}
METHODS["bcp"] = {"method": "bcp", "bcp_pretrain_steps": 2, "patch": (32, 32, 16)}

SHAPE = (48, 48, 32)
#: iterations of the run that test / predict compare: enough on the GPU for a confident
#: network (bf16 flips only voxels near p = 0.5); the CPU dry run only checks the plumbing
TRAINED_ITERATIONS = 80 if ON_GPU else 2


def write_cases(root: Path, n_train: int = 6, n_test: int = 2, seed: int = 0) -> Path:
    """Cases ``<ID>.h5`` of SHAPE: a bright ellipsoid (label 1) in Gaussian noise, lists."""
    return write_ellipsoids(
        root,
        SHAPE,
        jitter=4,
        radii=(13.0, 11.0, 8.0),
        radius_scale=(0.8, 1.1),
        noise=0.25,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cases(tmp_path_factory.mktemp("ellipsoids"))


def config(data: Path, **over: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "dataset": "own",
        "data_dir": str(data),
        "labeled": 2,
        "patch": (16, 16, 16),
        "stride": (16, 16, 16),
        "iterations": 3,
        "lr": 0.05,
        "lr_steps": (),
        "rampup_unit": 1,
        "checkpoint_every": 1,
        "num_workers": 0,
        "device": DEVICE,
        "seed": 11,
    }
    base.update(over)
    return TrainConfig(**base)


def _models(path: Path, parameters_only: bool = False) -> dict[str, torch.Tensor]:
    """Every floating tensor of the networks in a checkpoint or final file, by name (with
    ``parameters_only``, without BatchNorm's running statistics)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {
        f"{net}/{key}": value
        for net, tensors in state["models"].items()
        for key, value in tensors.items()
        if value.is_floating_point() and not (parameters_only and "running_" in key)
    }


@pytest.mark.parametrize("amp", AMPS)
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_stops_and_resumes(
    data: Path, tmp_path: Path, name: str, amp: str
) -> None:
    cfg = config(data, amp=amp, keep_checkpoint=True, **METHODS[name])
    out = tmp_path / "run"
    first = train(cfg, out, stop_after=1, progress=False)
    assert not first.finished and first.iteration == 1
    after_one = _models(out / "checkpoint.pt", parameters_only=True)
    second = train(cfg, out, progress=False)
    assert second.finished and second.resumed_from == 1

    runtime = yaml.safe_load((out / "config.yaml").read_text())["runtime"]
    assert runtime["precision"] == PRECISION_OF[amp], runtime
    assert runtime["device"].split(":")[0] == DEVICE, runtime
    # NaN marks a term that was not computed at that iteration (e.g. the total of the dual
    # network's losing subnet, PGL without candidates); the trainer itself stops on a
    # non-finite loss. Every iteration has a finite total (loss, loss_a / loss_b, ...),
    # finite supervised terms where it has any, and nothing infinite.
    history = first.history + second.history
    assert len(history) == second.iteration >= 3
    for h in history:
        assert not any(math.isinf(v) for v in h.values()), h
        totals = [v for key, v in h.items() if key.startswith("loss")]
        assert totals and any(math.isfinite(v) for v in totals), h
        assert all(math.isfinite(v) for k, v in h.items() if k.startswith(("sup", "pre_"))), h
    final = _models(out / "model_final.pt", parameters_only=True)
    assert final.keys() == after_one.keys()
    assert all(torch.isfinite(t).all() for t in final.values())
    moved = [k for k in final if not torch.equal(final[k], after_one[k])]
    scaler = load_checkpoint(out / "checkpoint.pt")["scaler"]
    if amp == "fp16":  # the gradient scaler ran: it has a finite positive scale
        scale = float(scaler["scale"])
        assert 0 < scale < math.inf, scaler
        # either an optimizer step went through, or every step overflowed and the scaler
        # skipped it and halved its scale (initially 2^16)
        assert moved or scale < 2.0**16, f"{name}: no weight changed, scale {scale}"
    else:
        assert not scaler, scaler
        assert moved, f"{name}: no weight changed in the iterations after the first"


@pytest.mark.skipif(not ON_GPU, reason="compile on a CPU: tests/test_compile.py")
@pytest.mark.parametrize("name", ["paper", "suponly"])
def test_compiled_run_trains_stops_and_resumes_on_the_gpu(
    data: Path, tmp_path: Path, name: str
) -> None:
    """``compile: on`` (inductor + Triton): the dual network and SupOnly train, resume and
    report the compile time; resumed weights equal to the uninterrupted run's within what
    a second uninterrupted run gives (cuDNN / Triton autotuning is not bit-reproducible)."""
    cfg = config(data, amp="bf16", compile=True, iterations=4, checkpoint_every=2, **METHODS[name])
    straight = train(cfg, tmp_path / "straight", progress=False)
    again = train(cfg, tmp_path / "again", progress=False)
    part = train(cfg, tmp_path / "resumed", stop_after=2, progress=False)
    rest = train(cfg, tmp_path / "resumed", progress=False)
    assert straight.finished and again.finished and rest.finished and part.iteration == 2
    log = (tmp_path / "straight" / "train.log").read_text()
    assert "compile on (config 'on')" in log and "s compiling of the" in log
    runtime = yaml.safe_load((tmp_path / "straight" / "config.yaml").read_text())["runtime"]
    assert runtime["compile"] is True
    a = _models(tmp_path / "straight" / "model_final.pt", parameters_only=True)
    b = _models(tmp_path / "again" / "model_final.pt", parameters_only=True)
    r = _models(tmp_path / "resumed" / "model_final.pt", parameters_only=True)
    assert all(torch.isfinite(t).all() for t in r.values())
    noise = max(float((a[k] - b[k]).abs().max()) for k in a)
    diff = max(float((a[k] - r[k]).abs().max()) for k in a)
    print(f"compiled {name}: max |straight - again| {noise:.3g}, |straight - resumed| {diff:.3g}")
    assert diff <= max(10 * noise, 1e-3), (diff, noise)


def _train_cli(cfg_file: Path, out: Path, stop_after: int | None) -> None:
    import semiseg3d

    src = str(Path(semiseg3d.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env.pop(STOP_AFTER_ENV, None)
    if stop_after is not None:
        env[STOP_AFTER_ENV] = str(stop_after)
    subprocess.run(
        [sys.executable, "-m", "semiseg3d", "train", "--config", str(cfg_file), "--out", str(out)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", ["paper", "suponly"])
def test_killed_and_resumed_run_ends_with_the_uninterrupted_weights(
    data: Path, tmp_path: Path, name: str
) -> None:
    amp = "bf16" if ON_GPU else "none"
    cfg = config(data, amp=amp, iterations=4, checkpoint_every=2, **METHODS[name])
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    for run in ("straight", "again"):
        train(cfg, tmp_path / run, progress=False)
    _train_cli(cfg_file, tmp_path / "killed", stop_after=3)  # the process ends after 3
    assert not (tmp_path / "killed" / "model_final.pt").exists()
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["iteration"] == 2
    _train_cli(cfg_file, tmp_path / "killed", stop_after=None)  # a new process resumes at 2
    assert "resuming at iteration 2" in (tmp_path / "killed" / "train.log").read_text()

    a = _models(tmp_path / "straight" / "model_final.pt")
    b = _models(tmp_path / "again" / "model_final.pt")
    k = _models(tmp_path / "killed" / "model_final.pt")
    assert a.keys() == b.keys() == k.keys() and len(a) > 30
    noise = max(float((a[n].float() - b[n].float()).abs().max()) for n in a)
    diff = max(float((a[n].float() - k[n].float()).abs().max()) for n in a)
    print(
        f"{name} {DEVICE} {amp}: max |straight - again| {noise:.3g}, |straight - resumed| {diff:.3g}"
    )
    if noise == 0.0:  # deterministic here: the resumed run must be bit for bit the same
        assert diff == 0.0
    else:  # run-to-run noise (atomics in some CUDA backward kernels): no more than 10x it
        assert diff <= 10 * noise, (diff, noise)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks (1.0 when both are empty), computed with numpy."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


@pytest.fixture(scope="module", params=["paper", "suponly"])
def trained(
    data: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Path:
    """A run of ``paper`` mode or SupOnly trained on the device (bf16 on the GPU)."""
    amp = "bf16" if ON_GPU else "none"
    cfg = config(
        data,
        amp=amp,
        iterations=TRAINED_ITERATIONS,
        checkpoint_every=1000,
        **METHODS[request.param],
    )
    out = tmp_path_factory.mktemp("trained") / "run"
    assert train(cfg, out, progress=False).finished
    return out


def _cpu_fp32_rule(run: Path) -> tuple[Any, Any, bool]:
    from semiseg3d.inference.rule import load_trained, prepared_rule

    cfg, nets = load_trained(run)
    accel = Acceleration(device=torch.device("cpu"), dtype=None, channels_last=False)
    _, prob_fn, lcc = prepared_rule(cfg, nets, accel)
    return cfg, prob_fn, lcc


def test_test_command_on_the_device_matches_the_cpu_fp32_prediction(
    trained: Path, data: Path
) -> None:
    from semiseg3d.data.dataset import VolumeDataset
    from semiseg3d.data.postprocess import largest_connected_component
    from semiseg3d.evaluation.maskio import read_mask
    from semiseg3d.evaluation.test_run import test_run
    from semiseg3d.inference.sliding_window import predict_label, sliding_window_probs

    table = test_run(trained, device=DEVICE, verbose=False)
    assert (trained / "metrics.csv").is_file() and "mean" in set(table["case"])
    cfg, prob_fn, lcc = _cpu_fp32_rule(trained)
    ids = (data / "test.list").read_text().split()
    ds = VolumeDataset(data, ids, cfg.patch, with_label=True)
    dices = {}
    for index, case in enumerate(ids):
        image = ds.volume(index).image
        ref = predict_label(sliding_window_probs(prob_fn, image, cfg.patch, cfg.stride))
        ref = largest_connected_component(ref) if lcc else ref
        got = read_mask(trained / "predictions" / f"{case}.nii.gz")[0]
        assert got.shape == ref.shape
        if ON_GPU:  # a trained network finds the ellipsoid: the comparison is not empty
            assert np.count_nonzero(ref) > 0, case
        dices[case] = _dice(got == 1, ref == 1)
    print(f"test on {DEVICE} vs CPU fp32, per-case Dice: {dices}")
    assert min(dices.values()) >= 0.99, dices


def test_predict_command_on_the_device_matches_the_cpu_fp32_prediction(
    trained: Path, data: Path, tmp_path: Path
) -> None:
    sitk = pytest.importorskip("SimpleITK", reason="semiseg3d predict needs SimpleITK")
    from semiseg3d.data.convert import write_preprocess_json
    from semiseg3d.data.convert_custom import PreprocessOptions
    from semiseg3d.data.postprocess import largest_connected_component
    from semiseg3d.inference.predict import predict_image, predict_scan, recipe_for_run

    # the volumes as stored (no z-score): predict sees what training saw
    write_preprocess_json(
        tmp_path, "custom", PreprocessOptions(intensity="none", patch=(16, 16, 16))
    )
    recipe = tmp_path / "preprocess.json"

    case = (data / "test.list").read_text().split()[0]
    with h5py.File(data / f"{case}.h5", "r") as f:
        image = np.asarray(f["image"])
    scan = sitk.GetImageFromArray(image.transpose(2, 1, 0))  # (x, y, z) -> ITK's (z, y, x)
    scan.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(scan, str(tmp_path / "scan.nii.gz"))

    predict_scan(
        trained,
        tmp_path / "scan.nii.gz",
        tmp_path / "mask.nii.gz",
        device=DEVICE,
        preprocess=recipe,
        verbose=False,
    )
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.nii.gz"))).transpose(2, 1, 0)

    cfg, prob_fn, lcc = _cpu_fp32_rule(trained)
    opts, _ = recipe_for_run(trained, cfg.data_dir, cfg.dataset, recipe)
    ref_img = predict_image(
        sitk.ReadImage(str(tmp_path / "scan.nii.gz")), prob_fn, opts, cfg.patch, cfg.stride
    ).mask
    ref = sitk.GetArrayFromImage(ref_img).transpose(2, 1, 0)
    ref = largest_connected_component(ref) if lcc else ref
    assert got.shape == ref.shape == image.shape
    if ON_GPU:
        assert np.count_nonzero(ref) > 0
    dice = _dice(got == 1, ref == 1)
    print(f"predict on {DEVICE} vs CPU fp32: Dice {dice:.5f}")
    assert dice >= 0.99
