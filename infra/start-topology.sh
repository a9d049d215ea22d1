#!/usr/bin/env bash
# The docker-compose topology without Docker, on this machine: PostgreSQL (initdb in a folder),
# `mlflow server` (PostgreSQL backend, served artifacts), a Ray head with its dashboard, a second
# Ray node, and `prunehive server` dispatching through Ray's Jobs API. Ctrl-C stops everything.
#
#   infra/start-topology.sh [STATE_DIR]          (default ./.prunehive/topology)
#   PRUNEHIVE_DATABASE_URL=... prunehive users add alice
#   PRUNEHIVE_SERVER=http://127.0.0.1:8000 PRUNEHIVE_TOKEN=... prunehive submit examples/digits-mlp-random.yaml --wait
#
# Ports: PG_PORT (5433), MLFLOW_PORT (5000), RAY_PORT (6380), DASHBOARD_PORT (8265), API_PORT (8000).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=$(realpath -m "${1:-.prunehive/topology}")
BIN=$(realpath "${VENV:-.venv}/bin")
PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1 || command -v initdb)")
PG_PORT=${PG_PORT:-5433} MLFLOW_PORT=${MLFLOW_PORT:-5000} RAY_PORT=${RAY_PORT:-6380}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265} API_PORT=${API_PORT:-8000}
export PATH="$BIN:$PATH" RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0 PRUNEHIVE_HOME="$STATE/home"
# A private Ray temp dir: Ray's socket paths must stay short, and a `ray start` with the default
# /tmp/ray leaves /tmp/ray/ray_current_cluster behind, which makes every later ray.init() on this
# machine try to join this (stopped) cluster.
RAY_TMP=$(mktemp -d /tmp/prunehive-ray-XXXXXX)
mkdir -p "$STATE/logs" "$PRUNEHIVE_HOME"

AS_PG=()  # PostgreSQL refuses to run as root
if [ "$(id -u)" -eq 0 ]; then AS_PG=(runuser -u postgres --); chown postgres "$STATE" "$STATE/logs"; fi
if [ ! -d "$STATE/pg" ]; then
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$STATE/pg" -U postgres -A trust -E UTF8 >"$STATE/logs/initdb.log"
fi
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$STATE/pg" -l "$STATE/logs/postgres.log" -w \
    -o "-p $PG_PORT -k $STATE -c listen_addresses=127.0.0.1" start
for db in prunehive mlflow; do
    "${AS_PG[@]}" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='$db'" \
        | grep -q 1 || "${AS_PG[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
done
export PRUNEHIVE_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/prunehive"
export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"

pids=()
stop() {
    echo "stopping the topology"
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 5
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$STATE/pg" -m fast stop || true
    rm -rf "$RAY_TMP"
}
trap stop EXIT
trap "exit 130" INT TERM
start() {  # NAME CMD...: its own session, so stopping it takes all its children
    local name=$1; shift
    setsid "$@" >"$STATE/logs/$name.log" 2>&1 &
    pids+=("$!")
}
wait_http() {
    for _ in $(seq 180); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 1; done
    echo "$1 did not answer; see $STATE/logs" >&2; return 1
}

start mlflow mlflow server --backend-store-uri "postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/mlflow" \
    --serve-artifacts --artifacts-destination "$STATE/mlartifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1
start ray-head ray start --head --block --port "$RAY_PORT" --dashboard-host 127.0.0.1 \
    --dashboard-port "$DASHBOARD_PORT" --num-cpus "${HEAD_CPUS:-1}" --disable-usage-stats --temp-dir "$RAY_TMP"
wait_http "http://127.0.0.1:$DASHBOARD_PORT/api/version"
start ray-worker ray start --address "127.0.0.1:$RAY_PORT" --block --num-cpus "${WORKER_CPUS:-2}" --disable-usage-stats
wait_http "$MLFLOW_TRACKING_URI/health"
start prunehive prunehive server --host 127.0.0.1 --port "$API_PORT" \
    --ray-address "http://127.0.0.1:$DASHBOARD_PORT" --max-jobs "${MAX_JOBS:-2}"
wait_http "http://127.0.0.1:$API_PORT/healthz"
echo "prunehive API http://127.0.0.1:$API_PORT (docs at /docs), MLflow $MLFLOW_TRACKING_URI," \
    "Ray dashboard http://127.0.0.1:$DASHBOARD_PORT; logs in $STATE/logs. Ctrl-C stops everything."
wait
