"""Benchmark: batched sliding-window inference against the one-window-at-a-time loop.

Both run in one process on the same random volume and the same dual model (both subnets'
softmax averaged, as at test time), and the script prints their times and the ratio. It is a
benchmark, not a test: run it by hand.

    python bench/sliding_window.py [--shape 96 80 48] [--patch 64 64 32] [--stride 16 16 8]
                                   [--batch-size 4] [--device cpu] [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from semiseg3d.inference.sliding_window import (
    sliding_window_probs,
    sliding_window_probs_loop,
    softmax_ensemble,
    window_grid,
)
from semiseg3d.models import DualNet


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 80, 48])
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 32])
    parser.add_argument("--stride", type=int, nargs=3, default=[16, 16, 8])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = DualNet().to(args.device).eval()
    prob_fn = softmax_ensemble([model.resnet, model.vnet])
    image = np.random.default_rng(0).standard_normal(args.shape).astype(np.float32)
    n_windows = len(window_grid(args.shape, args.patch, args.stride))

    def batched() -> np.ndarray:
        return sliding_window_probs(
            prob_fn, image, args.patch, args.stride, batch_size=args.batch_size, device=args.device
        )

    def loop() -> np.ndarray:
        with torch.inference_mode():
            return sliding_window_probs_loop(
                prob_fn, image, args.patch, args.stride, device=args.device
            )

    diff = float(np.abs(batched() - loop()).max())  # warm-up and equivalence check
    t_batched = _best_of(batched, args.repeats)
    t_loop = _best_of(loop, args.repeats)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, device {args.device}"
    )
    print(f"volume {args.shape}, patch {args.patch}, stride {args.stride}: {n_windows} windows")
    print(f"loop (1 window/forward):          {t_loop:8.2f} s")
    print(f"batched ({args.batch_size} windows/forward):      {t_batched:8.2f} s")
    print(f"speed-up loop/batched:            {t_loop / t_batched:8.2f}x   (max |diff| {diff:.2e})")


if __name__ == "__main__":
    main()
