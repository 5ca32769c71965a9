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
stop() {
  trap - EXIT INT TERM
  if [ -n "$worker" ]; then kill "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true; fi
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
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
