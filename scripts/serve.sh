#!/usr/bin/env bash
# `make serve`: a local Prefect server with its UI on http://127.0.0.1:${PREFECT_PORT:-4200}, the
# deployments of prefect.yaml on the `moeflow` process work pool, and a worker. Ctrl-C stops the
# worker first, then the server.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
port=${PREFECT_PORT:-4200}
export PATH="$root/.venv/bin:$PATH" PREFECT_HOME="$root/.prefect" MOEFLOW_ROOT="$root" DVC_NO_ANALYTICS=1
export PREFECT_API_URL="http://127.0.0.1:$port/api" PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_EXTRA_LOGGERS="flows,tasks,models,__main__"

prefect server start --host 127.0.0.1 --port "$port" >"$PREFECT_HOME/server.log" 2>&1 &
server=$!
worker=""
# Stop one process: SIGTERM, up to 5 s to finish, a second SIGTERM (Prefect's CLI then kills
# what it runs), then SIGKILL.
stop_one() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 10); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.5; done
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 10); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop() {
  trap - EXIT INT TERM
  if [ -n "$worker" ]; then stop_one "$worker"; fi  # the worker first, then the server
  stop_one "$server"
}
trap stop EXIT INT TERM

for _ in $(seq 1 180); do
  if python -c "import urllib.request,sys; urllib.request.urlopen('$PREFECT_API_URL/health', timeout=2)" 2>/dev/null; then break; fi
  kill -0 "$server" 2>/dev/null || { echo "error: the Prefect server did not start; see $PREFECT_HOME/server.log" >&2; exit 1; }
  sleep 1
done
prefect --no-prompt work-pool create moeflow --type process --overwrite >/dev/null
prefect --no-prompt deploy --all >"$PREFECT_HOME/deploy.log" 2>&1 || { cat "$PREFECT_HOME/deploy.log" >&2; exit 1; }
echo "Prefect UI: http://127.0.0.1:$port — deployments: $(prefect deployment ls 2>/dev/null | grep -c '/default') on pool moeflow"
echo "In another shell: export PREFECT_API_URL=$PREFECT_API_URL PREFECT_HOME=$PREFECT_HOME; .venv/bin/prefect deployment run 'pipeline/default'"
prefect worker start --pool moeflow --type process &
worker=$!
wait "$worker"
