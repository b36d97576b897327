#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv (and Debian's SLURM when run as root),
# then run the whole test suite. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# Debian packages: a one-node SLURM cluster for the executor test, and a C++ compiler for
# torch.compile's CPU backend (tests/test_compile.py; skipped when not root).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  pkgs=()
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    pkgs+=(slurmctld slurmd slurm-client munge slurm-wlm-basic-plugins)
  fi
  command -v c++ >/dev/null || pkgs+=(g++)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${pkgs[@]}" >/dev/null
  fi
fi

"$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
export PATH="$PWD/.venv/bin:$PATH"

# The SLURM executor plugin lives outside the venv, in .slurm-plugins/, which only the
# SLURM test puts on PYTHONPATH: snakemake imports every executor plugin it can see at
# start-up, and this one runs `scontrol` while imported (9 s once the test cluster is
# stopped). An older .venv that still holds it is cleaned.
if .venv/bin/python -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
  .venv/bin/python -m pip uninstall -q -y snakemake-executor-plugin-slurm >/dev/null
fi
if [ "$(id -u)" = 0 ] && command -v slurmctld >/dev/null; then
  if [ ! -d .slurm-plugins/snakemake_executor_plugin_slurm ]; then
    .venv/bin/python -m pip install -q --no-deps --target .slurm-plugins \
      'snakemake-executor-plugin-slurm>=2.8,<3' 'snakemake-executor-plugin-slurm-jobstep>=0.6,<1' \
      'throttler>=1.2.2,<2'
  fi
  export SEMISEG3D_SLURM_PLUGINS="$PWD/.slurm-plugins"
fi

# Bring up the local one-node SLURM cluster (idempotent); tests that need it skip when it
# is absent. A cluster this script started is stopped again when the tests end.
started_slurm=0
if [ "$(id -u)" = 0 ] && command -v slurmctld >/dev/null; then
  if ! sinfo -h >/dev/null 2>&1; then started_slurm=1; fi
  bash workflow/profiles/slurm-ci/start-cluster.sh || echo "warning: local SLURM did not start; SLURM tests will skip" >&2
fi

status=0
python -m pytest "$@" || status=$?
if [ "$started_slurm" = 1 ]; then
  bash workflow/profiles/slurm-ci/stop-cluster.sh >/dev/null || true
fi
exit "$status"
