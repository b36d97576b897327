#!/usr/bin/env bash
# The first GPU run of the project, in one command (issue 20): ends within 9 minutes on one
# H100 or H200 and writes everything to OUT_DIR (default: $OUT, the device tool's folder).
#
#   bash bench/gpu_check.sh [OUT_DIR]                 # on the GPU machine (see bench/README.md)
#   bash bench/gpu_check.sh --cpu-dry-run OUT_DIR     # the same stages at tiny sizes on a CPU
#
# Stages, in order, each under its own `timeout` (a stage gets min(its cap, the time left before
# the deadline) and is skipped with a line when less than 10 s are left); a failed or timed-out
# stage is recorded and the next one runs:
#   wheels   pure-Python packages from .whl/ (bench/gpu_wheels.sh) into a scratch site folder
#   env      nvidia-smi, python / torch / CUDA / cuDNN versions, bf16 support, modules at hand
#   data     LA-lite's halved volumes from .gpu_data/la_lite (bench/gpu_data.py pack), or the
#            full LA folder (--la DIR) when it is on the machine
#   cuda     pytest -m cuda tests/test_cuda.py: every method in bf16 and fp16, kill + resume,
#            test / predict against the CPU float32 prediction
#   speed    bench/speed.py at 112 x 112 x 80 (paper, code_faithful, SupOnly), fp32 eager vs
#            the fast path, MFU from the true MAC count (synthetic LA-sized volumes)
#   lite_*   bench/la_lite.py --split test --seed 1337 for paper, code_faithful, suponly
#   speed_compiled  bench/speed.py's compiled path (`compile: on`, torch.compile) beside the
#            fast eager path at 112 x 112 x 80 (SupOnly, paper); after LA-lite, as compiling
#            takes a minute or more
#   full     full-resolution LA, `paper` at 112 x 112 x 80, as many iterations as fit in the time
#            left, tested on the 20 test volumes (only when full-resolution LA is on the machine)
#
# Files in OUT_DIR (8, what the device tool brings back at most): summary.tsv (stage, status,
# seconds, limit, note), gpu_check.log (every stage's output), env.txt, speed.csv,
# la_lite.csv, la_lite_cases.csv (per-case metrics), la_full.csv, details.tar.gz (junit XML,
# run logs and metrics, all tables; no weights).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0
LA_DIR=""
OUT_DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-dry-run) DRY=1 ;;
    --la) LA_DIR=$2; shift ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: error: unknown option $1" >&2; exit 2 ;;
    *) OUT_DIR=$1 ;;
  esac
  shift
done
OUT_DIR=${OUT_DIR:-${OUT:-}}
if [ -z "$OUT_DIR" ]; then
  echo "gpu_check.sh: error: give an output folder (or set OUT)" >&2
  exit 2
fi
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
if [ -z "$LA_DIR" ]; then
  for d in "${SEMISEG3D_SHARED:-}/data/LA" shared/data/LA ../shared/data/LA; do
    if [ -f "$d/train.list" ]; then LA_DIR=$d; break; fi
  done
fi

PY=${PYTHON:-python3}
TOTAL=${GPU_CHECK_SECONDS:-540}                 # the whole script, start to end
[ "$DRY" = 1 ] && TOTAL=${GPU_CHECK_SECONDS:-300}
START=$(date +%s)
DEADLINE=$((START + TOTAL - 5))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/tables"
# the scratch folder (unpacked data, run folders with weights) goes when the script ends;
# GPU_CHECK_KEEP_WORK=1 keeps it
[ "${GPU_CHECK_KEEP_WORK:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
SUMMARY=$OUT_DIR/summary.tsv
LOG=$OUT_DIR/gpu_check.log
printf 'stage\tstatus\tseconds\tlimit\tnote\n' >"$SUMMARY"
: >"$LOG"
export PYTHONPATH=$ROOT/src
export PYTHONUNBUFFERED=1
export SEMISEG3D_CACHE_DIR=$WORK/cache          # bf16 self-check verdicts of this run only
if [ "$DRY" = 1 ]; then
  # small convolutions on a shared 2-core machine run far faster on one thread
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi

say() { echo "$*" | tee -a "$LOG"; }

record() {  # stage status seconds limit note
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$SUMMARY"
  say "-- $1: $2 (${3} s of ${4} s)${5:+: $5}"
}

skip() {  # stage reason
  record "$1" skipped 0 0 "$2"
}

pack_details() {
  (cd "$WORK" && find . \( -name '*.log' -o -name '*.csv' -o -name '*.xml' -o -name '*.yaml' \
    -o -name '*.txt' \) -not -path './cache/*' -not -path './site/*' -not -path '*/predictions*' \
    -print0 | tar czf "$OUT_DIR/details.tar.gz" --null -T - 2>/dev/null) || true
}

# stage NAME CAP NOTE -- COMMAND...: run COMMAND under timeout; output to its log and to LOG
stage() {
  local name=$1 cap=$2 note=$3
  shift 4
  local now left limit t0 rc status
  now=$(date +%s)
  left=$((DEADLINE - now))
  limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    skip "$name" "no time left (${left} s before the deadline)"
    return 0
  fi
  say "== $name: $* (limit ${limit} s, $(date -u +%H:%M:%S))"
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
  rc=$?
  cat "$WORK/logs/$name.log" >>"$LOG"
  tail -n 8 "$WORK/logs/$name.log"
  case $rc in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status="failed (exit $rc)" ;;
  esac
  record "$name" "$status" $(($(date +%s) - t0)) "$limit" "$note"
  # the tables are written in WORK (la_lite.py keeps lock files beside its CSVs) and the
  # main ones copied; the full-resolution run's per-case table is in details.tar.gz only
  # (the device tool brings back at most 8 files)
  for table in speed.csv la_lite.csv la_lite_cases.csv la_full.csv; do
    [ -f "$WORK/tables/$table" ] && cp "$WORK/tables/$table" "$OUT_DIR/"
  done
  pack_details
  return 0
}

need() {  # stage module...: true when the modules import; else a skip line naming the first
  local name=$1 module line
  shift
  for module in "$@"; do
    line=$(grep -m1 "^$module: " "$WORK/missing.txt" 2>/dev/null)
    if [ -n "$line" ]; then
      skip "$name" "module $line (bash bench/gpu_wheels.sh; carry .whl)"
      return 1
    fi
  done
  return 0
}

say "gpu_check: $( [ "$DRY" = 1 ] && echo 'CPU dry run' || echo 'GPU run'), output $OUT_DIR, work $WORK, deadline ${TOTAL} s, $(date -u +%FT%TZ)"

# -- wheels ---------------------------------------------------------------------------------
if compgen -G ".whl/*.whl" >/dev/null; then
  stage wheels 60 "$(ls .whl/*.whl | wc -l) wheels from .whl" -- \
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:$WORK/site
else
  skip wheels "no .whl/*.whl (bash bench/gpu_wheels.sh here, then carry .whl): using the installed packages"
fi

# -- env --------------------------------------------------------------------------------------
env_report() {
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || cat .gpu_data/COMMIT 2>/dev/null || echo unknown)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  "$PY" bench/gpu_env.py
}
export -f env_report
export PY OUT_DIR
stage env 60 "" -- bash -c 'env_report >"$OUT_DIR/env.txt" 2>&1; rc=$?; cat "$OUT_DIR/env.txt"; exit $rc'
"$PY" bench/gpu_env.py --missing >"$WORK/missing.txt" 2>&1 || echo "torch: gpu_env.py failed" >"$WORK/missing.txt"
[ -s "$WORK/missing.txt" ] && say "missing modules: $(tr '\n' ';' <"$WORK/missing.txt")"
HAS_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$DRY" = 0 ] && [ "$HAS_CUDA" != 1 ]; then
  say "gpu_check: no CUDA GPU here; run it on the GPU machine, or use --cpu-dry-run"
  pack_details
  exit 2
fi

# -- data -------------------------------------------------------------------------------------
LITE_DATA=""
LITE_DS=2
FULL_DATA=""
if [ "$DRY" = 1 ]; then
  # the chain of the GPU run on small synthetic cases in the LA layout: pack, unpack, train
  stage data 60 "synthetic LA-layout cases, packed and unpacked" -- bash -c "
    '$PY' bench/gpu_data.py volumes --lite --out '$WORK/la_full' --cases 6 --test 2 --shape 48 48 40 &&
    '$PY' bench/gpu_data.py pack --la '$WORK/la_full' --out '$WORK/la_cache' &&
    '$PY' bench/gpu_data.py unpack --cache '$WORK/la_cache' --out '$WORK/la_halved'"
  [ -f "$WORK/la_halved/test.list" ] && LITE_DATA=$WORK/la_halved && LITE_DS=1
  [ -f "$WORK/la_full/test.list" ] && FULL_DATA=$WORK/la_full
elif [ -f .gpu_data/la_lite/manifest.json ]; then
  stage data 90 "LA-lite halved volumes from .gpu_data/la_lite" -- \
    "$PY" bench/gpu_data.py unpack --cache .gpu_data/la_lite --out "$WORK/la_halved"
  [ -f "$WORK/la_halved/test.list" ] && LITE_DATA=$WORK/la_halved && LITE_DS=1
elif [ -n "$LA_DIR" ]; then
  LITE_DATA=$LA_DIR
  skip data "using the full LA folder $LA_DIR (downsampled by 2 on load)"
else
  skip data "no .gpu_data/la_lite (python bench/gpu_data.py pack ...; carry .gpu_data) and no LA folder"
fi
if [ "$DRY" = 0 ] && [ -n "$LA_DIR" ] && [ -f "$LA_DIR/test.list" ]; then
  FULL_DATA=$LA_DIR
fi

# -- cuda tests -------------------------------------------------------------------------------
if need cuda torch pytest yaml h5py dvclive nibabel medpy; then
  if [ "$DRY" = 1 ]; then
    stage cuda 150 "SEMISEG3D_TEST_DEVICE=cpu, -k suponly" -- env SEMISEG3D_TEST_DEVICE=cpu \
      "$PY" -m pytest -q -p no:cacheprovider -rA -m cuda -k suponly tests/test_cuda.py \
      --junitxml="$WORK/logs/cuda_junit.xml"
  else
    stage cuda 180 "" -- "$PY" -m pytest -q -p no:cacheprovider -rA -m cuda tests/test_cuda.py \
      --junitxml="$WORK/logs/cuda_junit.xml"
  fi
fi

# -- speed ------------------------------------------------------------------------------------
if need speed torch yaml h5py dvclive; then
  if [ "$DRY" = 1 ]; then
    stage speed 90 "16x16x16 on synthetic 32x32x24 volumes" -- "$PY" bench/speed.py \
      --skip-inference --patch 16 16 16 --volumes 32 32 24 --methods suponly paper \
      --paths fp32 fast --iterations 1 --warmup 1 --csv "$WORK/tables/speed.csv"
  else
    stage speed 120 "112x112x80 on synthetic 192x144x88 volumes" -- "$PY" bench/speed.py \
      --skip-inference --patches paper --volumes 192 144 88 \
      --methods paper code_faithful suponly --paths fp32 fast --paper-iterations 3 --warmup 2 \
      --csv "$WORK/tables/speed.csv"
  fi
fi

# -- LA-lite ----------------------------------------------------------------------------------
COMMIT_ARG=()
if ! git rev-parse HEAD >/dev/null 2>&1 && [ -f .gpu_data/COMMIT ]; then
  COMMIT_ARG=(--commit "$(cat .gpu_data/COMMIT)")
fi
if [ "$DRY" = 1 ]; then
  LITE_ARGS=(--iterations 2 --labeled 2 --patch 16 16 16 --stride 16 16 16 --checkpoint-every 1)
  LITE_CAPS=(paper:50 code_faithful:50 suponly:40)
else
  LITE_ARGS=()
  LITE_CAPS=(paper:120 code_faithful:110 suponly:80)  # the method first: time may run out
fi
for entry in "${LITE_CAPS[@]}"; do
  method=${entry%%:*}
  cap=${entry##*:}
  if [ -z "$LITE_DATA" ]; then
    skip "lite_$method" "no LA-lite data on this machine (carry .gpu_data, see bench/README.md)"
  elif need "lite_$method" torch yaml h5py pandas dvclive nibabel medpy; then
    stage "lite_$method" "$cap" "LA-lite test split, seed 1337" -- "$PY" bench/la_lite.py \
      --split test --seed 1337 --methods "$method" --data "$LITE_DATA" --downsample "$LITE_DS" \
      --work "$WORK/la_lite" --csv "$WORK/tables/la_lite.csv" "${COMMIT_ARG[@]}" "${LITE_ARGS[@]}"
  fi
done

# -- compiled step ----------------------------------------------------------------------------
if need speed_compiled torch yaml h5py dvclive; then
  if [ "$DRY" = 1 ]; then
    stage speed_compiled 120 "16x16x16, SupOnly" -- "$PY" bench/speed.py --skip-inference \
      --patch 16 16 16 --volumes 32 32 24 --methods suponly --paths fast compiled \
      --iterations 1 --warmup 1 --csv "$WORK/tables/speed.csv"
  else
    stage speed_compiled 150 "112x112x80, SupOnly and paper" -- "$PY" bench/speed.py \
      --skip-inference --patches paper --volumes 192 144 88 --methods suponly paper \
      --paths fast compiled --paper-iterations 3 --warmup 2 --csv "$WORK/tables/speed.csv"
  fi
fi

# -- full-resolution LA -------------------------------------------------------------------------
if [ -z "$FULL_DATA" ]; then
  skip full "full-resolution LA is not on this machine (223 MB: it cannot travel in the 64 MiB carry; --la DIR where it is)"
elif need full torch yaml h5py pandas dvclive nibabel medpy; then
  left=$((DEADLINE - $(date +%s)))
  if [ "$DRY" = 1 ]; then
    FULL_ARGS=(--labeled 2 --patch 16 16 16 --stride 16 16 16 --iterations 3 --test-reserve 5)
  else
    FULL_ARGS=(--patch 112 112 80 --stride 18 18 4 --iterations 6000 --test-reserve 90)
  fi
  if [ "$left" -lt 60 ]; then
    skip full "only ${left} s left: too little for a full-resolution run"
  else
    # the budget leaves 15 s of the stage's limit for start-up and the row
    stage full "$left" "paper at full resolution, as many iterations as fit" -- "$PY" \
      bench/la_lite.py --split test --seed 1337 --methods paper --data "$FULL_DATA" \
      --downsample 1 --budget "$((left - 15))" --work "$WORK/la_full_runs" \
      --csv "$WORK/tables/la_full.csv" "${COMMIT_ARG[@]}" "${FULL_ARGS[@]}"
  fi
fi

pack_details
say "gpu_check: done in $(($(date +%s) - START)) s"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
failed=$(awk -F'\t' 'NR > 1 && ($2 ~ /^failed/ || $2 == "timeout")' "$SUMMARY" | wc -l)
exit $((failed > 0 ? 1 : 0))
