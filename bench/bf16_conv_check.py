"""bf16 3-D convolutions on this CPU against float64: the shapes behind the CPU bf16 guard.

    python bench/bf16_conv_check.py [--repeats 4]

For each shape, one ``Conv3d`` (kernel 3, padding 1, no bias) runs ``--repeats`` times on
the same input under ``torch.autocast("cpu", dtype=torch.bfloat16)``; the script prints the
largest error of those outputs against the same convolution in float64, relative to the
largest reference value, and whether the repeats agree bit for bit. A correct bf16 kernel
stays near 0.004 (8 bits of mantissa); the guard in ``semiseg3d.accel`` exists because the
deepest ResNet-34 stage (128 -> 256 channels, stride 2) gave relative errors of 1.3 to 1e36,
and different values on repeated calls, when its output had an axis of length 1 beside a
longer one (PyTorch 2.13.0, oneDNN 3.12). Rerun this after a PyTorch upgrade: when every
row reads ``ok``, the guard can go.
"""

from __future__ import annotations

import argparse
import sys

import torch

#: (in channels, out channels, input X Y Z, stride); the output is ceil(input / stride)
SHAPES: tuple[tuple[int, int, tuple[int, int, int], int], ...] = (
    (128, 256, (4, 4, 2), 2),  # the demo patch 32x32x16 at ResNet-34 layer4: out 2x2x1
    (128, 256, (8, 8, 2), 2),  # out 4x4x1
    (128, 256, (6, 6, 2), 2),  # out 3x3x1
    (128, 256, (2, 2, 2), 2),  # out 1x1x1
    (128, 256, (4, 4, 4), 2),  # out 2x2x2
    (128, 256, (8, 8, 4), 2),  # LA-lite patch 64x64x32 at layer4: out 4x4x2
    (64, 128, (4, 4, 2), 2),  # a narrower stride-2 convolution, out 2x2x1
    (128, 256, (4, 4, 1), 1),  # stride 1, depth 1
)
LIMIT = 0.05  # relative error above which a row is flagged


def check(cin: int, cout: int, spatial: tuple[int, int, int], stride: int, repeats: int) -> str:
    """One table row for one convolution shape (batch 4)."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(cout, cin, 3, 3, 3, generator=gen) * (2.0 / (cin * 27)) ** 0.5
    x = torch.randn(4, cin, *spatial, generator=gen)
    ref = torch.nn.functional.conv3d(x.double(), weight.double(), stride=stride, padding=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [
            torch.nn.functional.conv3d(x, weight, stride=stride, padding=1).double()
            for _ in range(repeats)
        ]
    scale = float(ref.abs().max())
    rel = max(float((o - ref).abs().max()) for o in outs) / scale
    same = all(torch.equal(outs[0], o) for o in outs[1:])
    verdict = "ok" if rel <= LIMIT and same else "WRONG"
    out = tuple(ref.shape[2:])
    return (
        f"| {cin}->{cout} | {spatial} | {stride} | {out} | {rel:.3g} | "
        f"{'yes' if same else 'no'} | {verdict} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| channels | input | stride | output | max rel. error | repeats equal | verdict |")
    print("|---|---|---|---|---|---|---|")
    for cin, cout, spatial, stride in SHAPES:
        print(check(cin, cout, spatial, stride, args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
