#!/usr/bin/env bash
# The README's first quick-start command: install the project into ./.venv, run the whole
# demo pipeline on the synthetic dataset (data, training of a few variants and SupOnly,
# evaluation, tables, figures) and bundle everything into reports/report.html.
# About 10 minutes on 2 CPU cores; no GPU and no network needed beyond the package index.
# Extra arguments go to the first snakemake call (e.g. -n for a dry run, or a target).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

"$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e .
export PATH="$PWD/.venv/bin:$PATH"

start=$(date +%s)
snakemake "$@" --cores all --resources gpu=1 --configfile config/demo.yaml
case " $* " in
  *" -n "* | *" --dry-run "* | *" --dryrun "*) exit 0 ;;
esac
snakemake --configfile config/demo.yaml --report reports/report.html
echo "run-demo.sh: done in $(( $(date +%s) - start )) s: reports/summary.md, reports/tables/," \
  "reports/figures/, reports/report.html"
