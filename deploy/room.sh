#!/usr/bin/env bash
# deploy/room.sh: a room on one machine, everything on 127.0.0.1: a Ray head, the Sampler deployment (REPLICAS
# replicas), two Gradio fronts sharing it, and HAProxy balancing the fronts with a sticky cookie.
#
#   deploy/room.sh [REPLICAS] [LISTEN]        e.g. deploy/room.sh 2 127.0.0.1:8080     (Ctrl-C stops it all)
#
# PYTHON (default .venv/bin/python) must have requirements-serve.txt installed; haproxy comes from Debian
# (apt-get install haproxy). Extra app.py flags for both fronts: APP_ARGS="--unet DIR --clip DIR".
# For several machines see deploy/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RAY="$(dirname "$PYTHON")/ray"
REPLICAS=${1:-2}
LISTEN=${2:-127.0.0.1:8080}
RAY_PORT=${RAY_PORT:-6379}
FRONT1=127.0.0.1:${FRONT1_PORT:-7861}
FRONT2=127.0.0.1:${FRONT2_PORT:-7862}

# One machine: Ray on the loopback only, token authentication on, no usage statistics, no dashboard.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token
"$RAY" get-auth-token --generate >/dev/null     # ~/.ray/auth_token, made once; every Ray process here reads it

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$RAY" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

"$RAY" start --head --node-ip-address=127.0.0.1 --port="$RAY_PORT" --num-cpus="$REPLICAS" \
  --include-dashboard=false --disable-usage-stats >/dev/null

wait_for() {   # until the front answers (it loads its models and joins Ray first)
  until curl -fsS "http://$1/gradio_api/app_id" >/dev/null 2>&1; do sleep 1; done
}

# The first front deploys the Sampler; the second finds it running (same weights) and shares it.
# shellcheck disable=SC2086
"$PYTHON" app.py --backend ray --ray-address "127.0.0.1:$RAY_PORT" --replicas "$REPLICAS" \
  --port "${FRONT1##*:}" ${APP_ARGS:-} & pids+=($!)
wait_for "$FRONT1"
# shellcheck disable=SC2086
"$PYTHON" app.py --backend ray --ray-address "127.0.0.1:$RAY_PORT" --port "${FRONT2##*:}" ${APP_ARGS:-} & pids+=($!)
wait_for "$FRONT2"

echo "clipdiff: http://$LISTEN/ (fronts $FRONT1 and $FRONT2, $REPLICAS Sampler replicas)"
CLIPDIFF_LISTEN="$LISTEN" CLIPDIFF_FRONT1="$FRONT1" CLIPDIFF_FRONT2="$FRONT2" haproxy -db -f deploy/haproxy.cfg &
pids+=($!)
wait "${pids[@]}"
