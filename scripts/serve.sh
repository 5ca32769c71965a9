#!/usr/bin/env bash
# `make serve`: a local Prefect server with its UI on http://127.0.0.1:${PREFECT_PORT:-4200}, the
# deployments of prefect.yaml on the `moeflow` process work pool, the automations that end runs
# whose flow process died (flows/automations.py), and a worker.
#
# Crashes: the worker's flow processes send a heartbeat every PREFECT_FLOWS_HEARTBEAT_FREQUENCY
# seconds (default here 30; Prefect's minimum); a run without one for MOEFLOW_CRASH_AFTER_S (90) is
# Crashed, a run still Cancelling MOEFLOW_CANCEL_AFTER_S (60) after its cancel is Cancelled.
#
# Signals: the server and the worker run in process groups of their own (set -m), so Ctrl-C (SIGINT
# to the terminal's group) and SIGTERM reach this script only, which stops the worker, then the
# server, each with SIGTERM (SIGKILL after 10 s), and exits. A worker that exits on its own (killed,
# crashed) is started again; the server keeps running. A server that exits ends this script.
set -euo pipefail
set -m
cd "$(dirname "$0")/.."
root=$PWD
port=${PREFECT_PORT:-4200}
export PATH="$root/.venv/bin:$PATH" PREFECT_HOME="$root/.prefect" MOEFLOW_ROOT="$root" DVC_NO_ANALYTICS=1
export PREFECT_API_URL="http://127.0.0.1:$port/api" PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_EXTRA_LOGGERS="flows,tasks,models,__main__"
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}
mkdir -p "$PREFECT_HOME"
# Signals ignored when this script started (a background job of another script) stay ignored in its
# children: give the server and the worker back the default INT and TERM where env can (GNU env).
reset=()
if env --default-signal=INT,TERM true 2>/dev/null; then reset=(env --default-signal=INT,TERM); fi

server="" worker=""
# Stop one process (its whole group): SIGTERM, up to 10 s to finish, then SIGKILL.
stop_one() {
  local pid=$1 i
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.5
  done
  echo "serve: pid $pid did not stop within 10 s: killed" >&2
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop() {
  # While stopping, a second INT or TERM is ignored, not fatal: `make serve` sends its child a TERM
  # of its own when it gets one (GNU make), and a second Ctrl-C would do the same; either would end
  # this script half way, leaving the server running. Each stop is bounded (10 s, then SIGKILL).
  trap '' INT TERM
  trap - EXIT
  if [ -n "$worker" ]; then stop_one "$worker"; fi  # the worker first, then the server
  if [ -n "$server" ]; then stop_one "$server"; fi
}
# A shell started with SIGINT ignored (a background job of a script, `nohup ... &`) cannot trap it:
# Ctrl-C would do nothing, so say how to stop it instead.
if [ -n "$(trap -p INT)" ]; then
  echo "serve: started with SIGINT ignored (a background job): Ctrl-C will not stop it; send SIGTERM (kill $$)" >&2
fi
trap 'echo "serve: stopping the worker and the server" >&2; stop; exit 130' INT
trap 'echo "serve: stopping the worker and the server" >&2; stop; exit 143' TERM
trap stop EXIT

${reset[@]+"${reset[@]}"} prefect server start --host 127.0.0.1 --port "$port" >"$PREFECT_HOME/server.log" 2>&1 &
server=$!
for _ in $(seq 1 180); do
  if curl -sf -o /dev/null --max-time 2 "$PREFECT_API_URL/health"; then break; fi
  kill -0 "$server" 2>/dev/null || { echo "error: the Prefect server did not start; see $PREFECT_HOME/server.log" >&2; exit 1; }
  sleep 1
done
prefect --no-prompt work-pool create moeflow --type process --overwrite >/dev/null
prefect --no-prompt deploy --all >"$PREFECT_HOME/deploy.log" 2>&1 || { cat "$PREFECT_HOME/deploy.log" >&2; exit 1; }
python -m flows.automations --crash-after "${MOEFLOW_CRASH_AFTER_S:-90}" --cancel-after "${MOEFLOW_CANCEL_AFTER_S:-60}" \
  >>"$PREFECT_HOME/deploy.log" || exit 1
echo "Prefect UI: http://127.0.0.1:$port — deployments: $(prefect deployment ls 2>/dev/null | grep -c '/default') on pool moeflow; runs without a heartbeat for ${MOEFLOW_CRASH_AFTER_S:-90} s are Crashed; Ctrl-C stops it all"
echo "In another shell: export PREFECT_API_URL=$PREFECT_API_URL PREFECT_HOME=$PREFECT_HOME; .venv/bin/prefect deployment run 'pipeline/default'"

while :; do
  ${reset[@]+"${reset[@]}"} prefect worker start --pool moeflow --type process &
  worker=$!
  rc=0
  wait "$worker" || rc=$?
  worker=""
  kill -0 "$server" 2>/dev/null || { echo "error: the Prefect server exited; see $PREFECT_HOME/server.log" >&2; exit 1; }
  echo "serve: the worker exited (status $rc); starting a new one in 3 s (the server keeps running)" >&2
  sleep 3
done
