#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine: munge, slurmctld, slurmd (needs root).
#
# Idempotent: a daemon that is already running (its pid file names a live process) is left
# alone; the config files are (re)installed to /etc/slurm and a running controller is told
# to re-read them. Returns when `sinfo` shows the node ready to take jobs, or fails after
# $SLURM_CI_TIMEOUT seconds (default 60). Debian packages: slurmctld slurmd slurm-client
# munge slurm-wlm-basic-plugins (scripts/run-tests.sh installs them). Stop with
# stop-cluster.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
timeout_s=${SLURM_CI_TIMEOUT:-60}

die() { echo "start-cluster.sh: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" = 0 ] || die "needs root (it starts munged, slurmctld and slurmd)"
for exe in munged munge unmunge slurmctld slurmd sinfo scontrol; do
  command -v "$exe" >/dev/null || die "$exe not found; install the Debian packages slurmctld slurmd slurm-client munge slurm-wlm-basic-plugins"
done

# -- config --------------------------------------------------------------------------------
mkdir -p /etc/slurm
changed=0
for f in slurm.conf gres.conf; do
  if ! cmp -s "$here/$f" "/etc/slurm/$f"; then
    install -m 0644 "$here/$f" "/etc/slurm/$f"
    changed=1
  fi
done

# -- munge ---------------------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile=/etc/munge/munge.key
  else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 1 "$timeout_s"); do
  munge -n | unmunge >/dev/null 2>&1 && break
  sleep 1
done
munge -n | unmunge >/dev/null 2>&1 || die "munged does not answer (see /var/log/munge/munged.log)"

# -- slurm ---------------------------------------------------------------------------------
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if alive /run/slurmctld.pid; then
  [ "$changed" = 1 ] && scontrol reconfigure
else
  /usr/sbin/slurmctld
fi
if ! alive /run/slurmd.pid; then
  /usr/sbin/slurmd -N localhost
fi

# -- wait for the node ---------------------------------------------------------------------
state=""
for _ in $(seq 1 "$timeout_s"); do
  state=$(sinfo -h -n localhost -o %t 2>/dev/null | head -n 1 || true)
  case "$state" in
    idle | mix | alloc | comp) echo "start-cluster.sh: SLURM node localhost is $state"; exit 0 ;;
    down* | drain* | drng*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
die "node not ready after ${timeout_s}s (state '${state:-unknown}'; see /var/log/slurm/)"
