"""How fast the training step and the sliding window could be on this CPU at all.

Issue 20's targets ask for ratios (fast path >= 3x float32 eager in training, >= 4x in the
sliding-window test). Both paths spend most of their time in oneDNN's 3-D convolutions
(``bench/README.md``: 86 % of the bf16 sliding window, convolution forward + backward about
two thirds of a training step), so a ratio is bounded by how much faster this CPU multiplies
in bf16 than in float32. This script measures that, alone, in one process:

1. the attainable rate (GMAC/s: multiply-accumulates per second) of the CPU in float32 and
   in bf16: the best of an ``--gemm`` x ``--gemm`` matrix product and of the networks' own
   3x3x3 convolutions (16 channels at 64 x 64 x 32 down to 128 at 8 x 8 x 4, batch 4,
   channels-last, forward in inference mode), each the median of ``--repeats`` timed calls
   after one untimed call (oneDNN's direct convolutions beat its GEMM on this CPU);
2. the true MACs (``semiseg3d.models.complexity.true_macs``) of one LA-lite training
   iteration (forward x 3 for forward + backward, batch 2 + 2 for the dual network, 2 for
   SupOnly) and of the sliding-window test of one average LA-lite test volume (windows from
   the volumes' shapes, patch 64 x 64 x 32, stride 9 x 9 x 2, both subnets per window);
3. the time each would take if every MAC ran at the best measured rate: a lower bound in
   practice (no kernel of these networks was seen faster than the best probe, and
   everything that is not a convolution - BatchNorm, ReLU, losses, data - is left out).

The bf16 / float32 ratio of the best rates is about the most a bf16 path can gain over a
float32 path whose convolutions run at the float32 rate; ``--measured`` takes the measured seconds of
``bench/speed.py`` (float32 and fast path of the same item) and prints what fraction of the
bound each reaches.

Usage::

    python bench/roofline.py                       # GEMM rates, MACs, bounds
    python bench/roofline.py --measured paper 3.108 1.470 --measured window 25.08 8.42
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from speed import step_macs  # bench/speed.py, beside this script
from torch import nn

from semiseg3d.models import DualNet
from semiseg3d.models.complexity import true_macs

LITE_PATCH = (64, 64, 32)
LITE_STRIDE = (9, 9, 2)


CONV_PROBES = ((16, (64, 64, 32)), (32, (32, 32, 16)), (64, (16, 16, 8)), (128, (8, 8, 4)))


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # first call: buffers and kernel selection, not timed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_gmacs(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Multiply-accumulates per second (1e9) of an n x n by n x n product in ``dtype``."""
    torch.manual_seed(0)
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return n**3 / _median_seconds(lambda: torch.matmul(a, b), repeats) / 1e9


def conv_gmacs(dtype: torch.dtype, channels: int, size: Sequence[int], repeats: int) -> float:
    """Multiply-accumulates per second (1e9) of a 3x3x3 ``channels`` -> ``channels``
    convolution forward on a (4, channels, *size) channels-last batch, weights in ``dtype``."""
    torch.manual_seed(0)
    cl = torch.channels_last_3d
    conv = nn.Conv3d(channels, channels, 3, padding=1).to(dtype).to(memory_format=cl)
    x = torch.randn(4, channels, *size).to(dtype).contiguous(memory_format=cl)
    macs = 4 * math.prod(size) * channels * channels * 27
    with torch.inference_mode():
        return macs / _median_seconds(lambda: conv(x), repeats) / 1e9


def best_rate(dtype: torch.dtype, n: int, repeats: int) -> tuple[float, dict[str, float]]:
    """The best probe rate in ``dtype`` and every probe's rate (GMAC/s) by name."""
    probes = {f"GEMM {n}": gemm_gmacs(dtype, n, repeats)}
    for channels, size in CONV_PROBES:
        name = f"conv {channels}ch {'x'.join(map(str, size))}"
        probes[name] = conv_gmacs(dtype, channels, size, repeats)
    return max(probes.values()), probes


def lite_windows(data: Path, cases: int) -> float | None:
    """Mean number of sliding windows per LA-lite test volume (the first ``cases`` of
    ``test.list``), or None when the data are not at hand."""
    if not (data / "test.list").is_file():
        return None
    from semiseg3d.data.dataset import VolumeDataset
    from semiseg3d.inference.sliding_window import pad_to_patch, window_grid

    ids = [s for s in (data / "test.list").read_text().split() if s][:cases]
    ds = VolumeDataset(data, ids, LITE_PATCH, downsample=2, with_label=False)
    counts = []
    for i in range(len(ids)):
        padded, _ = pad_to_patch(ds.volume(i).image, LITE_PATCH)
        counts.append(len(window_grid(padded.shape, LITE_PATCH, LITE_STRIDE)))
    return sum(counts) / len(counts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gemm", type=int, default=2048, help="matrix size of the GEMM probe")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--data", default="../shared/data/LA", help="LA folder (window counts)")
    p.add_argument("--cases", type=int, default=20)
    p.add_argument(
        "--measured",
        nargs=3,
        action="append",
        default=[],
        metavar=("ITEM", "FP32_S", "FAST_S"),
        help="measured float32 and fast-path seconds of an item (paper, code_faithful, "
        "suponly, window); repeatable",
    )
    args = p.parse_args(argv)
    if args.gemm < 64 or args.repeats < 1:
        p.error("--gemm must be >= 64 and --repeats >= 1")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    fp32, probes32 = best_rate(torch.float32, args.gemm, args.repeats)
    bf16, probes16 = best_rate(torch.bfloat16, args.gemm, args.repeats)
    print(f"{'probe (GMAC/s)':24s} {'float32':>8s} {'bf16':>8s} {'ratio':>6s}")
    for name, rate in probes32.items():
        print(f"{name:24s} {rate:8.1f} {probes16[name]:8.1f} {probes16[name] / rate:6.2f}")
    print(f"{'best':24s} {fp32:8.1f} {bf16:8.1f} {bf16 / fp32:6.2f}")

    dual = DualNet()
    forward = sum(true_macs(net, LITE_PATCH) for net in (dual.resnet, dual.vnet))
    items = {m: step_macs(m, LITE_PATCH) for m in ("paper", "code_faithful", "suponly")}
    windows = lite_windows(Path(args.data), args.cases)
    if windows is not None:
        items["window"] = windows * forward
        print(f"sliding window: {windows:.1f} windows per LA-lite test volume on average")
    else:
        print(f"sliding window: no LA data at {args.data}, skipped")

    measured = {item: (float(a), float(b)) for item, a, b in args.measured}
    unknown = sorted(set(measured) - set(items))
    if unknown:
        p.error(f"--measured: unknown item(s) {unknown}; known: {sorted(items)}")
    print(
        f"{'item':14s} {'GMAC':>8s} {'bound fp32 s':>13s} {'bound bf16 s':>13s}"
        f" {'fp32 s':>8s} {'fast s':>8s} {'ratio':>6s} {'fp32 at':>8s} {'bf16 at':>8s}"
    )
    for item, macs in items.items():
        lo32, lo16 = macs / fp32 / 1e9, macs / bf16 / 1e9
        line = f"{item:14s} {macs / 1e9:8.1f} {lo32:13.3f} {lo16:13.3f}"
        if item in measured:
            t32, t16 = measured[item]
            line += f" {t32:8.3f} {t16:8.3f} {t32 / t16:6.2f} {lo32 / t32:8.0%} {lo16 / t16:8.0%}"
        print(line)
    print(
        "bound = MACs / best probe rate (non-convolution work left out); "
        "'at' = bound / measured, the fraction of the best rate reached"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
