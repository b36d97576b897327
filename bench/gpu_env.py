"""The machine a GPU check runs on: versions, the GPU, bf16 support, and the modules at hand.

``python bench/gpu_env.py`` prints one ``key: value`` line each (``bench/gpu_check.sh`` keeps
them as ``env.txt``); ``python bench/gpu_env.py --missing`` prints one line per module of
:data:`MODULES` that does not import (``name: reason``), what the stages of the check need.

:func:`peak_tflops` is the dense peak of a GPU by its name, the denominator of the MFU
column of ``bench/speed.py``. The figures are NVIDIA's data-sheet numbers, which are quoted
"with sparsity"; dense = half of them:

=====================  ==================  ==================  =======================================
device name contains   bf16 / fp16 dense   TF32 dense          source
=====================  ==================  ==================  =======================================
``H200``               989.4 TFLOP/s       494.7 TFLOP/s       H200 Tensor Core GPU data sheet (SXM:
                                                               1,979 / 989 with sparsity)
``H100`` + ``PCIe``    756.5               378.0               H100 data sheet, PCIe column (1,513 / 756)
``H100`` (other: SXM)  989.4               494.7               H100 data sheet, SXM column (1,979 / 989)
``A100``               312.0               156.0               A100 data sheet (dense figures given)
=====================  ==================  ==================  =======================================

The H100 of this workplace's device machine reports itself as ``NVIDIA H100 80GB HBM3`` (the
SXM part); an 8192^3 bf16 matrix product measured 769-798 TFLOP/s on it and on the H200, so
about 80 % of these peaks is what a single large GEMM reaches.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys

__all__ = ["PEAKS", "peak_tflops", "main"]

#: (name fragments that must all occur, bf16 dense TFLOP/s, TF32 dense TFLOP/s), first match wins
PEAKS: tuple[tuple[tuple[str, ...], float, float], ...] = (
    (("H200",), 989.4, 494.7),
    (("H100", "PCIE"), 756.5, 378.0),
    (("H100",), 989.4, 494.7),
    (("A100",), 312.0, 156.0),
)

#: modules the check imports beyond torch, by what needs them
MODULES = (
    "numpy",
    "scipy",
    "h5py",
    "pandas",
    "yaml",
    "pytest",
    "nibabel",
    "medpy",
    "dvclive",
    "SimpleITK",
    "tqdm",
)


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Dense peak TFLOP/s of the GPU called ``device_name`` for ``precision`` (``bf16`` /
    ``fp16``: the tensor-core half-precision peak; ``fp32``: the TF32 peak, what cuDNN
    convolutions use by default), or None for a GPU not in :data:`PEAKS`."""
    name = device_name.upper()
    for fragments, half, tf32 in PEAKS:
        if all(f in name for f in fragments):
            return tf32 if precision == "fp32" else half
    return None


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken install is as missing as an absent one
        return f"MISSING ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return str(getattr(mod, "__version__", "present"))


def report() -> list[str]:
    """The ``key: value`` lines of the environment."""
    import torch

    lines = [
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"platform: {platform.platform()}",
        f"cpu_count: {os.cpu_count()}",
        f"torch: {torch.__version__}",
        f"torch_cuda: {torch.version.cuda}",
        f"cudnn: {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}",
        f"cuda_available: {torch.cuda.is_available()}",
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name(0)
        lines += [
            f"gpu: {name}",
            f"gpu_capability: {props.major}.{props.minor}",
            f"gpu_memory_gib: {props.total_memory / 2**30:.1f}",
            f"gpu_multiprocessors: {props.multi_processor_count}",
            f"bf16_supported: {torch.cuda.is_bf16_supported()}",
            f"tf32_cudnn: {torch.backends.cudnn.allow_tf32}",
            f"tf32_matmul: {torch.backends.cuda.matmul.allow_tf32}",
            f"peak_bf16_tflops: {peak_tflops(name, 'bf16')}",
            f"peak_tf32_tflops: {peak_tflops(name, 'fp32')}",
        ]
        a = torch.randn(256, 256, device="cuda")
        b = torch.randn(256, 256, device="cuda")
        ref = (a.double() @ b.double()).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = (a @ b).float()
        err = float((got - ref).abs().max() / ref.abs().max())
        lines.append(f"bf16_matmul_rel_error: {err:.2e} ({'ok' if err < 0.02 else 'WRONG'})")
    else:
        from semiseg3d.accel import cpu_supports_bf16

        lines.append(f"cpu_bf16: {cpu_supports_bf16()}")
    lines += [f"module_{m}: {_version(m)}" for m in MODULES]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--missing", action="store_true", help="only list the missing modules")
    args = p.parse_args(argv)
    if args.missing:
        for module in ("torch", *MODULES):
            version = _version(module)
            if version.startswith("MISSING"):
                print(f"{module}: {version[len('MISSING ') :]}")
        return 0
    for line in report():
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
