#!/usr/bin/env bash
# Stop the one-node SLURM cluster of start-cluster.sh: slurmd, slurmctld, munged, each by
# its pid file (never by name). Idempotent; needs root.
set -euo pipefail

stop() {
  local pidfile=$1 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && { echo "stop-cluster.sh: $pidfile ($pid) did not exit" >&2; return 1; }
  fi
  rm -f "$pidfile"
}

stop /run/slurmd.pid
stop /run/slurmctld.pid
stop /run/munge/munged.pid
echo "stop-cluster.sh: stopped"
