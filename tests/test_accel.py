"""Mixed precision and memory format (issue 8): selection of ``amp`` / ``channels_last``,
a short bf16 training run on CPU, the volume cache, and the inference path's equality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_checkpoint_resume import tiny_config, write_synthetic
from torch import nn

from semiseg3d import accel
from semiseg3d.accel import resolve_acceleration
from semiseg3d.config.run import load_config
from semiseg3d.data.dataset import VolumeDataset, cache_fits
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


@pytest.mark.parametrize(
    ("patch", "refused"),
    [
        ((32, 32, 16), True),  # the demo: deepest map 2 x 2 x 1
        ((96, 96, 16), True),  # 6 x 6 x 1
        ((16, 32, 32), True),  # 1 x 2 x 2: any axis
        ((64, 64, 32), False),  # LA-lite: 4 x 4 x 2
        ((112, 112, 80), False),
        ((16, 16, 16), False),  # 1 x 1 x 1 computes correctly
        ((33, 32, 32), False),  # ceil(33 / 16) = 3
    ],
)
def test_cpu_bf16_patch_guard(bf16_cpu, patch, refused) -> None:
    bf16_cpu(True)
    auto = resolve_acceleration("auto", "auto", "cpu", patch)
    if refused:
        assert auto.dtype is None and not auto.channels_last
        assert auto.note.startswith("float32 instead of bf16: patch")
        assert auto.describe()["note"] == auto.note
        with pytest.raises(InputError, match=r"'amp' = 'bf16' on a CPU: patch .* use auto or none"):
            resolve_acceleration("bf16", "auto", "cpu", patch)
    else:
        assert auto.dtype == torch.bfloat16 and auto.note == ""
        assert resolve_acceleration("bf16", "auto", "cpu", patch).dtype == torch.bfloat16
    # the guard is about the CPU kernels only
    cuda = resolve_acceleration("bf16", "auto", "cuda", patch)
    assert cuda.dtype == torch.bfloat16 and cuda.note == ""


def test_bf16_patch_refusal_leaves_no_run_folder(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "data")
    cfg = tiny_config(data, amp="bf16", patch=(32, 32, 16), iterations=2)
    with pytest.raises(InputError, match="'amp' = 'bf16' on a CPU"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_bf16_training_run_on_cpu(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "data")
    cfg = tiny_config(data, amp="bf16", channels_last="auto", iterations=3, checkpoint_every=3)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.finished and len(result.iteration_seconds) == 3
    for values in result.history:
        assert all(np.isfinite(v) for k, v in values.items() if k != "pgl")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["runtime"] == {
        "device": "cpu",
        "precision": "bf16",
        "channels_last": True,
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
