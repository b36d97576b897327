#!/usr/bin/env bash
# Fill .whl/ (ignored by git; carried to the GPU machine) with the pure-Python packages that
# bench/gpu_check.sh needs beyond what the GPU machine's python3 already has (PyTorch 2.11
# with CUDA, numpy, h5py, scipy, pandas, matplotlib, pytest, pyyaml, tqdm, requests, psutil,
# ...; no network there). Run it here, in the repository root, on a machine that reaches PyPI:
#
#   bash bench/gpu_wheels.sh [DIR]        # default DIR: .whl
#
# What needs what (everything else the check imports is on the GPU machine already):
#   nibabel                 test / predict write NIfTI masks (evaluation.maskio)
#   medpy                   test scores the masks (evaluation.metrics; built here from its
#                           sdist, pure Python; its SimpleITK requirement is not installed)
#   dvclive + the part of dvc it imports (dvc, dvc-render, dvc-studio-client, flatten-dict,
#   funcy, ruamel.yaml, voluptuous, wcwidth)
#                           every training run logs through dvclive (training.runtime)
# Left out on purpose: SimpleITK (a 50 MB binary wheel; with the LA-lite data the carry would
# pass 64 MiB) - `semiseg3d predict` imports it, so the CUDA predict check is skipped there
# with a line saying so; jsonschema (only params.yaml validation, not used by the check).
#
# Versions are those of the project's CPU environment (known to work together). The wheels
# are for CPython 3.12 on x86_64 (the GPU machine's python3); all but wcwidth (abi3) are
# py3-none-any. About 5 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
mkdir -p "$DEST"
rm -f "$DEST"/*.whl

PURE=(
  nibabel==5.4.2
  dvclive==3.49.1
  dvc==3.67.1
  dvc-render==1.0.2
  dvc-studio-client==0.23.0
  flatten-dict==0.5.0
  funcy==2.1
  ruamel.yaml==0.19.1
  voluptuous==0.16.0
  wcwidth==0.9.5
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DEST" "${PURE[@]}"
# MedPy publishes only an sdist; without Boost it builds as pure Python
"$PY" -m pip wheel -q --no-deps -w "$DEST" medpy==0.5.2

n=$(ls "$DEST"/*.whl | wc -l)
echo "gpu_wheels: $n wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
ls -1 "$DEST"
