#!/usr/bin/env bash
# Start an MLflow tracking server, so that many jobs (a Slurm sweep) write through one process
# instead of each opening the sqlite file: sqlite with many concurrent writers, worse on a
# shared filesystem (NFS/Lustre locking), loses or blocks writes.
#
#   eval "$(bash scripts/mlflow_server.sh)"                       # start; export MLFLOW_TRACKING_URI
#   bash scripts/mlflow_server.sh --backend-store-uri postgresql://user:pw@db/mlflow --host 0.0.0.0
#   bash scripts/mlflow_server.sh --stop [--port 5000]            # stop the one started on that port
#
# Options (all optional):
#   --backend-store-uri URI   where runs are stored (default sqlite:///$PWD/mlflow.db: the
#                             embedded default store, now written by the server alone;
#                             for a busy cluster use postgresql:// or mysql://)
#   --artifacts-destination DIR|URI   where the server keeps artifacts; clients send them
#                             through the server, no shared filesystem needed (default $PWD/mlartifacts)
#   --host H                  interface to bind (default 127.0.0.1; 0.0.0.0 for compute nodes)
#   --port P                  (default 5000)
#   --workers N               server worker processes (default 1; keep 1 with sqlite)
#   --foreground              run in the foreground (e.g. as its own Slurm job), no pid file
#   --stop                    stop the server this script started on --port
#
# In the background it writes its pid and log to ${MLFLOW_SERVER_STATE:-/tmp/mlflow-server}-<port>.{pid,log},
# waits for /health (about 8 s on 2 cores), and prints as its last stdout line
#   export MLFLOW_TRACKING_URI=http://<host>:<port>
# Jobs launched from that shell (Slurm included) inherit it. Exit codes: 0 up, 1 failed to start.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MLFLOW=${MLFLOW:-$ROOT/.venv/bin/mlflow}
[ -x "$MLFLOW" ] || MLFLOW=$(command -v mlflow) || { echo "mlflow_server: mlflow not found (run scripts/setup.sh)" >&2; exit 1; }

backend="sqlite:///$ROOT/mlflow.db"
artifacts="$ROOT/mlartifacts"
host=127.0.0.1
port=5000
workers=1
foreground=0
stop=0
while [ $# -gt 0 ]; do
  case "$1" in
    --backend-store-uri) backend=$2; shift 2 ;;
    --artifacts-destination) artifacts=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --foreground) foreground=1; shift ;;
    --stop) stop=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "mlflow_server: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

state=${MLFLOW_SERVER_STATE:-/tmp/mlflow-server}-$port
if [ "$stop" = 1 ]; then
  if [ -s "$state.pid" ] && kill -0 "$(cat "$state.pid")" 2>/dev/null; then
    pid=$(cat "$state.pid")
    kill -- "-$pid" 2>/dev/null || kill "$pid"   # the server's process group (uvicorn workers)
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    echo "mlflow_server: stopped (pid $pid)" >&2
  else
    echo "mlflow_server: none running on port $port" >&2
  fi
  rm -f "$state.pid"
  exit 0
fi

# the address clients use: this host's name when binding all interfaces
advertise=$host
if [ "$host" = 0.0.0.0 ] || [ "$host" = "::" ]; then
  advertise=$(hostname -f 2>/dev/null || hostname)
fi
url="http://$advertise:$port"
args=(server --backend-store-uri "$backend" --artifacts-destination "$artifacts" --serve-artifacts
      --host "$host" --port "$port" --workers "$workers")
if [ "$advertise" != "$host" ]; then
  # MLflow only accepts Host headers of localhost and private IPs unless told otherwise
  args+=(--allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-$advertise,$advertise:$port,localhost:*,127.0.0.1:*,10.*,192.168.*,172.*}")
fi
# the job-execution subsystem (not used here) makes start-up several times slower
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

if [ "$foreground" = 1 ]; then
  echo "mlflow_server: serving $backend at $url" >&2
  exec "$MLFLOW" "${args[@]}"
fi

if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 || curl -sf "$url/health" >/dev/null 2>&1; then
  if [ -s "$state.pid" ] && kill -0 "$(cat "$state.pid")" 2>/dev/null; then
    echo "mlflow_server: already running on port $port (pid $(cat "$state.pid"))" >&2
    echo "export MLFLOW_TRACKING_URI=$url"
    exit 0
  fi
  echo "mlflow_server: port $port is taken by another server; choose --port" >&2
  exit 1
fi
setsid "$MLFLOW" "${args[@]}" </dev/null >"$state.log" 2>&1 &
echo $! >"$state.pid"
for _ in $(seq 1 240); do   # up to 60 s
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 || curl -sf "$url/health" >/dev/null 2>&1; then
    echo "mlflow_server: serving $backend at $url (pid $(cat "$state.pid"), log $state.log)" >&2
    echo "export MLFLOW_TRACKING_URI=$url"
    exit 0
  fi
  kill -0 "$(cat "$state.pid")" 2>/dev/null || break
  sleep 0.25
done
echo "mlflow_server: failed to start; last lines of $state.log:" >&2
tail -n 20 "$state.log" >&2
kill -- "-$(cat "$state.pid")" 2>/dev/null || true
rm -f "$state.pid"
exit 1
