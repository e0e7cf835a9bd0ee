#!/usr/bin/env bash
# Start an MLflow tracking server, so that many jobs (a Slurm sweep) write through one process
# instead of each opening the sqlite file: sqlite with many concurrent writers, worse on a
# shared filesystem (NFS/Lustre locking), loses or blocks writes.
#
#   eval "$(bash scripts/mlflow_server.sh)"                       # start; export MLFLOW_TRACKING_URI
#   bash scripts/mlflow_server.sh --backend-store-uri postgresql://user:pw@db/mlflow --host 0.0.0.0
#   bash scripts/mlflow_server.sh --postgres /srv/mlflow-pg        # on a PostgreSQL it starts (data in that folder)
#   bash scripts/mlflow_server.sh --stop [--port 5000]            # stop the one started on that port (and its PostgreSQL)
#
# Options (all optional):
#   --backend-store-uri URI   where runs are stored (default sqlite:///$PWD/mlflow.db: the
#                             embedded default store, now written by the server alone;
#                             for a busy cluster use postgresql:// or mysql://)
#   --artifacts-destination DIR|URI   where the server keeps artifacts; clients send them
#                             through the server, no shared filesystem needed (default $PWD/mlartifacts)
#   --host H                  interface to bind (default 127.0.0.1; 0.0.0.0 for compute nodes)
#   --port P                  (default 5000)
#   --postgres DIR            store runs in a PostgreSQL server whose data lives in DIR: installs
#                             Debian's postgresql when missing (root and apt), initdb on first use,
#                             starts it (pg_ctl, as the postgres user when run as root) listening on a
#                             unix socket in DIR only (no TCP), creates database "mlflow"; the
#                             backend is then postgresql+psycopg2://postgres@/mlflow?host=DIR. DIR and its
#                             parents must be reachable by the postgres user (not a 700 folder).
#                             Overrides --backend-store-uri. --stop stops it too.
#   --workers N               server worker processes (default 1; keep 1 with sqlite; more with postgres)
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
postgres=
while [ $# -gt 0 ]; do
  case "$1" in
    --backend-store-uri) backend=$2; shift 2 ;;
    --artifacts-destination) artifacts=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --postgres) postgres=$(realpath -m "$2"); shift 2 ;;
    --foreground) foreground=1; shift ;;
    --stop) stop=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "mlflow_server: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

state=${MLFLOW_SERVER_STATE:-/tmp/mlflow-server}-$port

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_pg() {   # postgres refuses to run as root: run its tools as the postgres user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_stop() {
  local dir=$1 bin
  bin=$(pg_bin)
  if [ -n "$bin" ] && [ -f "$dir/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null && echo "mlflow_server: stopped PostgreSQL in $dir" >&2
  fi
}
pg_start() {
  local dir=$1 bin
  bin=$(pg_bin)
  if [ -z "$bin" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "mlflow_server: PostgreSQL is not installed and apt-get needs root" >&2; return 1
    fi
    echo "mlflow_server: installing postgresql (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/tmp/mlflow_server.apt.log 2>&1 \
      || { apt-get update -q >>/tmp/mlflow_server.apt.log 2>&1 && apt-get install -y -q postgresql >>/tmp/mlflow_server.apt.log 2>&1; } \
      || { echo "mlflow_server: apt-get install postgresql failed (/tmp/mlflow_server.apt.log)" >&2; return 1; }
    bin=$(pg_bin)
  fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  chmod 700 "$dir"
  if ! as_pg test -w "$dir"; then
    echo "mlflow_server: the postgres user cannot reach $dir (is a parent folder private?)" >&2; return 1
  fi
  if [ ! -s "$dir/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 >"$dir.initdb.log" 2>&1 \
      || { echo "mlflow_server: initdb failed:" >&2; tail -n 5 "$dir.initdb.log" >&2; return 1; }
  fi
  if ! as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    # unix socket in DIR only: nothing listens on TCP, the folder's permissions guard the database
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses='' -k $dir -c max_connections=200" start >/dev/null \
      || { echo "mlflow_server: PostgreSQL did not start:" >&2; tail -n 5 "$dir/server.log" >&2; return 1; }
  fi
  if [ "$(as_pg "$bin/psql" -h "$dir" -U postgres -d postgres -tAc "select 1 from pg_database where datname='mlflow'")" != 1 ]; then
    as_pg "$bin/createdb" -h "$dir" -U postgres mlflow
  fi
  echo "mlflow_server: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') serving $dir" >&2
}

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
  if [ -s "$state.postgres" ]; then pg_stop "$(cat "$state.postgres")"; fi
  if [ -n "$postgres" ]; then pg_stop "$postgres"; fi
  rm -f "$state.postgres"
  exit 0
fi

if [ -n "$postgres" ]; then
  pg_start "$postgres" || exit 1
  backend="postgresql+psycopg2://postgres@/mlflow?host=$postgres"
  echo "$postgres" >"$state.postgres"
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
