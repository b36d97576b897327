"""Mixed precision and memory format (issue 8): selection of ``amp`` / ``channels_last``,
the CPU bf16 self-check (issue 20), a short bf16 training run on CPU, the volume cache, and the inference path's equality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import cpu_bf16_trains
from test_checkpoint_resume import tiny_config, write_synthetic
from torch import nn

from semiseg3d import accel
from semiseg3d.accel import resolve_acceleration
from semiseg3d.bf16check import Bf16Probe, Bf16Verdict, bf16_verdict, compare_bf16, machine_key
from semiseg3d.config.run import load_config
from semiseg3d.data.dataset import VolumeDataset, cache_fits
from semiseg3d.data.synthetic import SynthParams, write_dataset
from semiseg3d.errors import InputError
from semiseg3d.inference.sliding_window import (
    predict_label,
    sliding_window_probs,
    sliding_window_probs_loop,
    softmax_ensemble,
)
from semiseg3d.training.trainer import train


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch):
    def set_support(value: bool) -> None:
        monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: value)

    return set_support


@pytest.mark.parametrize(
    ("amp", "cl", "supported", "dtype", "channels_last"),
    [
        ("auto", "auto", True, torch.bfloat16, True),
        ("auto", "auto", False, None, False),  # no native bf16: float32, contiguous
        ("auto", False, True, torch.bfloat16, False),
        ("none", "auto", True, None, False),  # float32 on CPU keeps the reference format
        ("none", True, True, None, True),
        ("bf16", "auto", False, torch.bfloat16, True),  # forced, even without native support
    ],
)
def test_cpu_selection(bf16_cpu, amp, cl, supported, dtype, channels_last) -> None:
    bf16_cpu(supported)
    got = resolve_acceleration(amp, cl, "cpu")
    assert got.dtype == dtype and got.channels_last is channels_last
    assert got.describe() == {
        "device": "cpu",
        "precision": {None: "fp32", torch.bfloat16: "bf16"}[dtype],
        "channels_last": channels_last,
    }


def test_cuda_selection_does_not_need_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "cuda_supports_bf16", lambda: True)
    got = resolve_acceleration("auto", "auto", "cuda")
    assert got.dtype == torch.bfloat16 and got.channels_last
    monkeypatch.setattr(accel, "cuda_supports_bf16", lambda: False)
    got = resolve_acceleration("auto", "auto", "cuda")
    assert got.dtype is None and got.channels_last  # float32 on CUDA still channels-last
    assert resolve_acceleration("fp16", False, "cuda").dtype == torch.float16


def test_bad_values_are_one_line_errors() -> None:
    with pytest.raises(InputError, match="'amp' = 'fp16' needs CUDA"):
        resolve_acceleration("fp16", "auto", "cpu")
    with pytest.raises(InputError, match="'amp' must be one of"):
        resolve_acceleration("fp8", "auto", "cpu")
    with pytest.raises(InputError, match="channels_last'? must be true, false or auto"):
        load_config(None, {"channels_last": "yes"})
    with pytest.raises(InputError, match="channels_last'? must be true, false or auto"):
        load_config(None, {"channels_last": 1})
    with pytest.raises(InputError, match="cache_volumes"):
        load_config(None, {"cache_volumes": "always"})
    assert load_config(None, {"channels_last": "auto", "amp": "auto"}).amp == "auto"


class _Scaled(nn.Module):
    """A 1x1x1 convolution whose output and weight gradient under bf16 autocast can be
    spoiled on purpose: ``fault`` = "" (correct), "nan_out", "nan_grad", "far_out"."""

    def __init__(self, fault: str = "") -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1)
        self.fault = fault

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if not torch.is_autocast_enabled("cpu"):
            return out
        if self.fault == "nan_out":
            return out * float("nan")
        if self.fault == "far_out":
            return out + 10 * out.detach().abs().max()
        if self.fault == "nan_grad":
            return _NanGrad.apply(out)
        return out


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN backward (a broken weight-gradient kernel)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad * float("nan")


@pytest.mark.parametrize(
    ("fault", "train", "ok", "reason"),
    [
        ("", True, True, ""),
        ("nan_out", False, False, "_Scaled: non-finite bf16 outputs"),
        ("nan_grad", True, False, "_Scaled: non-finite bf16 gradients"),
        ("nan_grad", False, True, ""),  # inference runs no backward pass
        # outputs moved by 10 x their largest value: relative error about 10 > 0.5
        ("far_out", False, False, "_Scaled: bf16 outputs differ from float32 by"),
    ],
)
def test_compare_bf16_catches_each_fault(fault: str, train: bool, ok: bool, reason: str) -> None:
    torch.manual_seed(0)
    got_ok, got_reason, out_err, grad_err = compare_bf16(
        [_Scaled(fault)], (2, 1, 4, 4, 4), train, channels_last=False
    )
    assert got_ok is ok
    assert got_reason.startswith(reason) if reason else got_reason == ""
    if ok:  # a 1x1x1 convolution in bf16: inputs and weights rounded to 8 mantissa bits
        assert out_err < 0.02 and grad_err < 0.02


def test_verdict_is_cached_per_machine_and_shape(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEMISEG3D_CACHE_DIR", str(tmp_path))
    built: list[int] = []

    def build() -> list[nn.Module]:
        built.append(1)
        return [_Scaled("nan_grad")]

    probe = Bf16Probe(build=build, shape=(2, 1, 4, 4, 4), train=True, label="toy")
    first = bf16_verdict(probe, False)
    assert not first.ok and not first.cached and len(built) == 1
    again = bf16_verdict(probe, False)
    assert again.cached and not again.ok and again.reason == first.reason and len(built) == 1
    # another shape, memory format or torch version is another entry
    bf16_verdict(Bf16Probe(build, (2, 1, 4, 4, 8), True, "toy"), False)
    bf16_verdict(probe, True)
    assert len(built) == 3
    cache = json.loads((tmp_path / "bf16-verdicts-v2.json").read_text())
    assert len(cache) == 3 and all(machine_key() in key for key in cache)
    assert all(f"torch {torch.__version__}" in key for key in cache)
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert not bf16_verdict(probe, False).cached and len(built) == 4
    # an unreadable cache file is ignored and replaced
    (tmp_path / "bf16-verdicts-v2.json").write_text("{not json")
    assert not bf16_verdict(probe, False).cached and len(built) == 5
    assert bf16_verdict(probe, False).cached


@pytest.fixture
def broken_bf16(bf16_cpu, monkeypatch: pytest.MonkeyPatch):
    """A CPU with native bf16 whose self-check fails (simulated verdict)."""
    bf16_cpu(True)
    seen: list[Bf16Probe] = []

    def verdict(probe: Bf16Probe, channels_last: bool, **_: object) -> Bf16Verdict:
        seen.append(probe)
        return Bf16Verdict(False, "VNet: non-finite bf16 gradients", 0.01, float("inf"))

    monkeypatch.setattr(accel, "bf16_verdict", verdict)
    return seen


def test_failed_check_makes_auto_fall_back_and_refuses_bf16(broken_bf16) -> None:
    probe = Bf16Probe(build=list, shape=(4, 1, 16, 16, 16), train=True, label="suponly")
    auto = resolve_acceleration("auto", "auto", "cpu", probe)
    assert auto.dtype is None and not auto.channels_last
    assert auto.note == (
        "float32 instead of bf16: bf16 self-check failed for suponly at input "
        "[4, 1, 16, 16, 16] (VNet: non-finite bf16 gradients)"
    )
    with pytest.raises(InputError) as err:
        resolve_acceleration("bf16", "auto", "cpu", probe)
    assert str(err.value) == (
        "config key 'amp' = 'bf16': this CPU computes suponly at input [4, 1, 16, 16, 16] "
        "wrongly in bf16 (VNet: non-finite bf16 gradients); use auto or none"
    )
    # no probe: nothing to check; CUDA and float32 are not checked
    assert resolve_acceleration("bf16", "auto", "cpu").dtype == torch.bfloat16
    assert resolve_acceleration("bf16", "auto", "cuda", probe).dtype == torch.bfloat16
    assert resolve_acceleration("none", "auto", "cpu", probe).dtype is None
    assert len(broken_bf16) == 2


def test_refused_bf16_leaves_no_run_folder_and_auto_trains_in_fp32(
    broken_bf16, tmp_path: Path
) -> None:
    data = write_synthetic(tmp_path / "data")
    cfg = tiny_config(data, amp="bf16", method="suponly", iterations=2)
    with pytest.raises(InputError, match="'amp' = 'bf16': this CPU computes suponly at input"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    # the probe is the run's own batch: 2 labeled cases of the 16^3 patch (SupOnly)
    assert broken_bf16[0].shape == (2, 1, 16, 16, 16) and broken_bf16[0].train
    auto = tiny_config(data, amp="auto", method="suponly", iterations=2, checkpoint_every=2)
    assert train(auto, tmp_path / "run2", progress=False).finished
    log = (tmp_path / "run2" / "train.log").read_text()
    assert "precision fp32 (amp 'auto')" in log and "bf16 self-check failed for suponly" in log


def test_bf16_training_run_on_cpu(tmp_path: Path) -> None:
    """A real bf16 run at the first patch this CPU passes the self-check for (which one
    depends on the CPU: see semiseg3d.bf16check)."""
    small = write_synthetic(tmp_path / "data")
    large = tmp_path / "large"
    write_dataset(large, SynthParams(n_train=4, n_test=1, shape=(64, 64, 32)))
    cfgs = [
        tiny_config(
            data,
            amp="bf16",
            channels_last="auto",
            iterations=3,
            checkpoint_every=3,
            method=method,
            patch=patch,
        )
        for data, method, patch in [(small, "dual", (16, 16, 16)), (large, "suponly", (64, 64, 32))]
    ]
    usable = [c for c in cfgs if cpu_bf16_trains(c)]
    if not accel.cpu_supports_bf16() or not usable:
        pytest.skip("this CPU fails the bf16 self-check at every candidate patch")
    cfg = usable[0]
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.finished and len(result.iteration_seconds) == 3
    for values in result.history:
        assert all(np.isfinite(v) for k, v in values.items() if k != "pgl")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["runtime"] == {
        "device": "cpu",
        "precision": "bf16",
        "channels_last": True,
        "compile": False,
        "cache_volumes": True,
    }
    assert saved["amp"] == "bf16" and saved["channels_last"] == "auto"
    final = torch.load(tmp_path / "run" / "model_final.pt", weights_only=True)
    weights = [t for m in final["models"].values() for t in m.values() if t.is_floating_point()]
    assert all(t.dtype == torch.float32 for t in weights)  # autocast keeps fp32 master weights
    log = (tmp_path / "run" / "train.log").read_text()
    assert "precision bf16 (amp 'bf16'), channels_last on" in log
    # the record is ignored when the folder's config is checked again (same run: no error)
    assert train(cfg, tmp_path / "run", progress=False).skipped


def test_volume_cache_returns_the_same_patches(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "data", n_train=3, n_test=0)
    ids = ["case00", "case01", "case02"]
    plain = VolumeDataset(data, ids, (16, 16, 16))
    cached = VolumeDataset(data, ids, (16, 16, 16), cache=True)
    cached.preload()
    assert len(cached._volumes) == 3
    for key in [(0, 5), (2, 9), (1, 123)]:
        a, b = plain[key], cached[key]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    # each case: 24*24*20 voxels (see write_synthetic) x 5 bytes = 57,600 bytes
    paths = [data / f"{c}.h5" for c in ids]
    assert cache_fits(paths, 1, limit=3 * 57_600)
    assert not cache_fits(paths, 1, limit=3 * 57_600 - 1)
    assert cache_fits(paths, 2, limit=3 * 57_600 // 8)


class _Affine(nn.Module):
    """Logits (-x, x) * 3 plus a second channel of features: a smooth, known network."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([-3 * x, 3 * x], dim=1), x


def test_inference_fast_path_equals_reference_in_fp32_and_is_close_in_bf16() -> None:
    rng = np.random.default_rng(4)
    image = rng.normal(size=(21, 18, 13)).astype(np.float32)
    conv = nn.Conv3d(1, 2, 3, padding=1)
    torch.manual_seed(0)
    nets = [_Affine(), nn.Sequential(conv)]
    fn = softmax_ensemble(nets)
    loop = sliding_window_probs_loop(fn, image, (8, 8, 8), (3, 4, 2))
    fp32 = sliding_window_probs(fn, image, (8, 8, 8), (3, 4, 2), batch_size=5)
    np.testing.assert_allclose(fp32, loop, atol=1e-5)
    assert np.array_equal(predict_label(fp32), predict_label(loop))
    # channels-last in float32: same values up to float32 rounding
    for net in nets:
        net.to(memory_format=torch.channels_last_3d)
    cl = sliding_window_probs(fn, image, (8, 8, 8), (3, 4, 2), batch_size=5, channels_last=True)
    np.testing.assert_allclose(cl, fp32, atol=1e-5)
    bf16 = sliding_window_probs(
        fn,
        image,
        (8, 8, 8),
        (3, 4, 2),
        batch_size=5,
        amp_dtype=torch.bfloat16,
        channels_last=True,
    )
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=3e-2)
    agree = np.mean(predict_label(bf16) == predict_label(fp32))
    assert agree > 0.99
