"""Where the CPU time of a training step goes: single layers and the bare networks.

Times, in this one process and one after the other, the forward pass and the backward pass
(input gradient where the layer's input is an activation, weight gradient always) of the
convolutions that dominate the dual network's step at the LA-lite patch (batch 4,
64 x 64 x 32), in four ways: float32, float32 channels-last, bf16 autocast, bf16 autocast
channels-last; then the bare networks (ResNet-34 + V-Net, batch 4, forward + backward +
SGD step, no losses or data) in float32 and bf16 channels-last. Medians of ``--repeats``
timed calls after one untimed call. Run it alone (``uptime``).

Usage::

    python bench/conv_layers.py [--repeats 3] [--skip-networks]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from semiseg3d.models import DualNet

B = 4
LAYERS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    (
        "ResNet stem 7x7x7, 1->16",
        lambda: nn.Conv3d(1, 16, 7, padding=3, bias=False),
        (1, 64, 64, 32),
    ),
    ("V-Net first 3x3x3, 1->16", lambda: nn.Conv3d(1, 16, 3, padding=1), (1, 64, 64, 32)),
    ("3x3x3, 16->16", lambda: nn.Conv3d(16, 16, 3, padding=1), (16, 64, 64, 32)),
    ("3x3x3, 32->32", lambda: nn.Conv3d(32, 32, 3, padding=1), (32, 32, 32, 16)),
    ("3x3x3, 64->64", lambda: nn.Conv3d(64, 64, 3, padding=1), (64, 16, 16, 8)),
    ("3x3x3, 128->128", lambda: nn.Conv3d(128, 128, 3, padding=1), (128, 8, 8, 4)),
]
WAYS = {
    "fp32": (None, False),
    "fp32 cl": (None, True),
    "bf16": (torch.bfloat16, False),
    "bf16 cl": (torch.bfloat16, True),
}


def _format(cl: bool) -> torch.memory_format:
    return torch.channels_last_3d if cl else torch.contiguous_format


def layer_ms(
    make: Callable[[], nn.Module],
    shape: tuple[int, ...],
    dtype: torch.dtype | None,
    cl: bool,
    n: int,
) -> tuple[float, float]:
    """Median forward and backward milliseconds of one layer."""
    torch.manual_seed(0)
    conv = make().to(memory_format=_format(cl))
    needs_grad = shape[0] > 1  # the image itself needs no gradient
    x = torch.randn(B, *shape).to(memory_format=_format(cl)).requires_grad_(needs_grad)
    fwd, bwd = [], []
    for i in range(n + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            y = conv(x)
        t1 = time.perf_counter()
        y.float().sum().backward()
        t2 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return 1000 * statistics.median(fwd), 1000 * statistics.median(bwd)


def network_seconds(dtype: torch.dtype | None, cl: bool, n: int) -> float:
    """Median seconds of forward + backward + SGD of both networks on one batch."""
    torch.manual_seed(0)
    model = DualNet().to(memory_format=_format(cl))
    nets = [model.resnet, model.vnet]
    x = torch.randn(B, 1, 64, 64, 32).to(memory_format=_format(cl))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        loss = torch.zeros(())
        for net in nets:
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                logits, features = net(x)
            loss = loss + logits.float().mean() + features.float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-networks", action="store_true")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {B}")
    print(f"{'layer':28s}" + "".join(f"{w:>18s}" for w in WAYS) + "   (forward / backward ms)")
    for name, make, shape in LAYERS:
        cells = []
        for dtype, cl in WAYS.values():
            f, b = layer_ms(make, shape, dtype, cl, args.repeats)
            cells.append(f"{f:7.1f} /{b:7.1f}")
        print(f"{name:28s}" + "".join(f"{c:>18s}" for c in cells), flush=True)
    if not args.skip_networks:
        ref = network_seconds(None, False, args.repeats)
        fast = network_seconds(torch.bfloat16, True, args.repeats)
        print(
            f"both networks, fwd + bwd + SGD: fp32 {ref:.3f} s, bf16 cl {fast:.3f} s "
            f"(ratio {ref / fast:.2f}; the image convolutions as the models define them)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
