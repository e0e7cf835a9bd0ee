#!/usr/bin/env bash
# Stop the single-node cluster started by scripts/slurm_up.sh (only the daemons whose
# pid files it wrote under $SLURM_BASE, plus munged).
#   scripts/slurm_down.sh           stop daemons, keep state, logs and the accounting DB
#   scripts/slurm_down.sh --purge   also delete $SLURM_BASE and our /etc/slurm/slurm.conf link
#                                   (job ids restart at 1 afterwards)
#   SLURM_BASE        (default /tmp/framework-slurm)
#   SLURM_STOP_MUNGE  1 = also stop munged, which is machine-wide (default 1)
set -uo pipefail
BASE=${SLURM_BASE:-/tmp/framework-slurm}
export SLURM_CONF=$BASE/etc/slurm.conf
purge=0
case "${1:-}" in
  "") ;;
  --purge) purge=1 ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "slurm_down: needs root" >&2; exit 3; }

stop_pid() { # stop_pid <pidfile> <seconds>: TERM, wait, then KILL
  [ -s "$1" ] || return 0
  local p; p=$(cat "$1")
  kill -0 "$p" 2>/dev/null || return 0
  kill "$p" 2>/dev/null
  for _ in $(seq 1 $(( $2 * 4 ))); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.25; done
  echo "slurm_down: $1 ($p) did not stop in $2 s, killing" >&2
  kill -9 "$p" 2>/dev/null; return 0
}
# scontrol shutdown stops slurmctld and slurmd cleanly (state saved); the pid files cover
# the case where slurmctld is not answering
if [ -f "$SLURM_CONF" ] && [ -s "$BASE/run/slurmctld.pid" ] && kill -0 "$(cat "$BASE/run/slurmctld.pid")" 2>/dev/null; then
  timeout 10 scontrol shutdown >/dev/null 2>&1
fi
stop_pid "$BASE/run/slurmd.pid" 15
stop_pid "$BASE/run/slurmctld.pid" 15
stop_pid "$BASE/run/slurmdbd.pid" 15
if [ -S "$BASE/mysqlrun/mysql.sock" ]; then
  timeout 30 mariadb-admin --socket="$BASE/mysqlrun/mysql.sock" shutdown >/dev/null 2>&1
fi
stop_pid "$BASE/mysqlrun/mysql.pid" 30
if [ "${SLURM_STOP_MUNGE:-1}" = 1 ] && [ -s /run/munge/munged.pid ]; then
  stop_pid /run/munge/munged.pid 10
fi
if [ "$purge" = 1 ]; then
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$BASE/etc/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
  rm -rf "$BASE"
fi
if [ "$purge" = 1 ]; then echo "slurm stopped, $BASE purged"; else echo "slurm stopped"; fi
